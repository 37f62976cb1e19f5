/**
 * Recipes: YAML files (npm `yaml`) describing a quantization run, modelled on llm-compressor's recipes
 * (a stage holding one quantization modifier) but with our methods:
 *
 * ```yaml
 * quant_stage:
 *   quant_modifiers:
 *     MASQuantModifier:          # or SmoothQuantModifier, RTNModifier
 *       scheme: W4A8             # W4A16 (group 128, asymmetric), W8A8, W4A8, W4A6
 *       group_size: 0            # weights: 0 = per output channel
 *       alpha: 0.5               # SmoothQuant migration strength (init of MAS)
 *       epochs: 2
 *       learning_rate: 0.05
 *       weight_decay: 0
 *       loss_weights: {text: 1.0, vision: 0.5, audio: 1.0}
 *       modalities: [text, vision]   # optional: default = the model's modalities present in calibration
 *       chain: split             # forward that propagates the quantized chain: split | deploy
 *       cmc: {enabled: true, rank_ratio: 0.2, whiten: true, target: float}
 * calibration:
 *   num_samples: 128
 *   seed: 0
 *   max_seq_length: 512         # plain-text mode: tokens per chunk
 * ```
 * Command-line flags override the file. Unknown keys and wrong types are rejected with the key's path.
 */
import { parse as parseYaml } from "yaml";
import {
  CMC_DEFAULTS,
  type CmcOptions,
  isSchemeName,
  makeScheme,
  MAS_DEFAULTS,
  type MethodName,
  MODALITIES,
  type Modality,
  type QuantScheme,
} from "@masquant/core";

/** A fully resolved recipe. */
export interface Recipe {
  method: MethodName;
  /** Scheme name as given (w4a16, w8a8, w4a8, w4a6). */
  schemeName: "w4a16" | "w8a8" | "w4a8" | "w4a6";
  /** Weight group size override (undefined: the scheme's). */
  groupSize?: number;
  alpha: number;
  epochs: number;
  learningRate: number;
  weightDecay: number;
  lossWeights: Record<Modality, number>;
  modalities?: Modality[];
  chain: "split" | "deploy";
  cmc: CmcOptions;
  numSamples: number;
  seed: number;
  maxSeqLength: number;
}

/** The defaults (MASQuant at W4A8 with the reference hyper-parameters). */
export const RECIPE_DEFAULTS: Recipe = {
  method: "masquant",
  schemeName: "w4a8",
  alpha: MAS_DEFAULTS.alpha,
  epochs: MAS_DEFAULTS.epochs,
  learningRate: MAS_DEFAULTS.lr,
  weightDecay: MAS_DEFAULTS.weightDecay,
  lossWeights: { ...MAS_DEFAULTS.lossWeights },
  chain: "split",
  cmc: { ...CMC_DEFAULTS },
  numSamples: 128,
  seed: 0,
  maxSeqLength: 512,
};

/** A recipe error: names the file and the key path. */
export class RecipeError extends Error {
  /** Creates the error. */
  constructor(readonly file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = "RecipeError";
  }
}

const MODIFIERS: Record<string, MethodName> = {
  MASQuantModifier: "masquant",
  SmoothQuantModifier: "smoothquant",
  RTNModifier: "rtn",
};

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function keysOnly(file: string, path: string, o: Obj, allowed: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) {
      throw new RecipeError(file, `unknown key ${path ? `${path}.` : ""}${k} (allowed: ${allowed.join(", ")})`);
    }
  }
}

function num(file: string, path: string, v: unknown, check?: (n: number) => boolean, hint?: string): number {
  if (typeof v !== "number" || !Number.isFinite(v) || (check && !check(v))) {
    throw new RecipeError(file, `${path} must be ${hint ?? "a number"}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function bool(file: string, path: string, v: unknown): boolean {
  if (typeof v !== "boolean") throw new RecipeError(file, `${path} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function str<T extends string>(file: string, path: string, v: unknown, allowed: readonly T[]): T {
  const s = typeof v === "string" ? v.toLowerCase() : v;
  if (typeof s !== "string" || !allowed.includes(s as T)) {
    throw new RecipeError(file, `${path} must be one of ${allowed.join(", ")}, got ${JSON.stringify(v)}`);
  }
  return s as T;
}

/** Parses and validates recipe YAML text (file name for messages). */
export function parseRecipe(text: string, file: string, base: Recipe = RECIPE_DEFAULTS): Recipe {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new RecipeError(file, `is not valid YAML: ${(e as Error).message.split("\n")[0]}`);
  }
  const r: Recipe = structuredClone(base);
  if (doc === null || doc === undefined) return r;
  if (!isObj(doc)) throw new RecipeError(file, "must be a mapping with quant_stage and calibration");
  keysOnly(file, "", doc, ["quant_stage", "calibration"]);
  if (doc.quant_stage !== undefined) {
    const st = doc.quant_stage;
    if (!isObj(st)) throw new RecipeError(file, "quant_stage must be a mapping");
    keysOnly(file, "quant_stage", st, ["quant_modifiers"]);
    const mods = st.quant_modifiers;
    if (!isObj(mods)) throw new RecipeError(file, "quant_stage.quant_modifiers must be a mapping with one modifier");
    const names = Object.keys(mods);
    if (names.length !== 1) {
      throw new RecipeError(
        file,
        `quant_stage.quant_modifiers must hold exactly one of ${Object.keys(MODIFIERS).join(", ")}`,
      );
    }
    const name = names[0];
    if (!(name in MODIFIERS)) {
      throw new RecipeError(
        file,
        `unknown modifier quant_stage.quant_modifiers.${name} (allowed: ${Object.keys(MODIFIERS).join(", ")})`,
      );
    }
    r.method = MODIFIERS[name];
    const m = mods[name] ?? {};
    const p = `quant_stage.quant_modifiers.${name}`;
    if (!isObj(m)) throw new RecipeError(file, `${p} must be a mapping`);
    const allowed = r.method === "rtn"
      ? ["scheme", "group_size"]
      : r.method === "smoothquant"
      ? ["scheme", "group_size", "alpha"]
      : [
        "scheme",
        "group_size",
        "alpha",
        "epochs",
        "learning_rate",
        "weight_decay",
        "loss_weights",
        "modalities",
        "chain",
        "cmc",
      ];
    keysOnly(file, p, m, allowed);
    if (m.scheme !== undefined) {
      const s = str(file, `${p}.scheme`, m.scheme, ["w4a16", "w8a8", "w4a8", "w4a6"] as const);
      r.schemeName = s;
    }
    if (m.group_size !== undefined) {
      r.groupSize = num(
        file,
        `${p}.group_size`,
        m.group_size,
        (n) => Number.isInteger(n) && n >= 0,
        "a non-negative integer",
      );
    }
    if (m.alpha !== undefined) {
      r.alpha = num(file, `${p}.alpha`, m.alpha, (n) => n >= 0 && n <= 1, "a number in [0, 1]");
    }
    if (m.epochs !== undefined) {
      r.epochs = num(file, `${p}.epochs`, m.epochs, (n) => Number.isInteger(n) && n >= 0, "a non-negative integer");
    }
    if (m.learning_rate !== undefined) {
      r.learningRate = num(file, `${p}.learning_rate`, m.learning_rate, (n) => n > 0, "a positive number");
    }
    if (m.weight_decay !== undefined) {
      r.weightDecay = num(file, `${p}.weight_decay`, m.weight_decay, (n) => n >= 0, "a non-negative number");
    }
    if (m.loss_weights !== undefined) {
      if (!isObj(m.loss_weights)) {
        throw new RecipeError(file, `${p}.loss_weights must be a mapping text/vision/audio → number`);
      }
      keysOnly(file, `${p}.loss_weights`, m.loss_weights, MODALITIES);
      for (const [k, v] of Object.entries(m.loss_weights)) {
        r.lossWeights[k as Modality] = num(file, `${p}.loss_weights.${k}`, v, (n) => n >= 0, "a non-negative number");
      }
    }
    if (m.modalities !== undefined) {
      if (!Array.isArray(m.modalities)) {
        throw new RecipeError(file, `${p}.modalities must be a list of text, vision, audio`);
      }
      r.modalities = m.modalities.map((x, i) => str(file, `${p}.modalities[${i}]`, x, MODALITIES));
    }
    if (m.chain !== undefined) r.chain = str(file, `${p}.chain`, m.chain, ["split", "deploy"] as const);
    if (m.cmc !== undefined) {
      if (!isObj(m.cmc)) throw new RecipeError(file, `${p}.cmc must be a mapping`);
      keysOnly(file, `${p}.cmc`, m.cmc, ["enabled", "rank_ratio", "whiten", "target", "damping"]);
      const c = m.cmc;
      if (c.enabled !== undefined) r.cmc.enabled = bool(file, `${p}.cmc.enabled`, c.enabled);
      if (c.rank_ratio !== undefined) {
        r.cmc.rankRatio = num(file, `${p}.cmc.rank_ratio`, c.rank_ratio, (n) => n > 0, "a positive number");
      }
      if (c.whiten !== undefined) r.cmc.whiten = bool(file, `${p}.cmc.whiten`, c.whiten);
      if (c.target !== undefined) {
        r.cmc.target = str(file, `${p}.cmc.target`, c.target, ["float", "quantized"] as const);
      }
      if (c.damping !== undefined) {
        r.cmc.damping = num(file, `${p}.cmc.damping`, c.damping, (n) => n > 0, "a positive number");
      }
    }
  }
  if (doc.calibration !== undefined) {
    const c = doc.calibration;
    if (!isObj(c)) throw new RecipeError(file, "calibration must be a mapping");
    keysOnly(file, "calibration", c, ["num_samples", "seed", "max_seq_length"]);
    if (c.num_samples !== undefined) {
      r.numSamples = num(
        file,
        "calibration.num_samples",
        c.num_samples,
        (n) => Number.isInteger(n) && n >= 1,
        "a positive integer",
      );
    }
    if (c.seed !== undefined) r.seed = num(file, "calibration.seed", c.seed, Number.isInteger, "an integer");
    if (c.max_seq_length !== undefined) {
      r.maxSeqLength = num(
        file,
        "calibration.max_seq_length",
        c.max_seq_length,
        (n) => Number.isInteger(n) && n >= 2,
        "an integer ≥ 2",
      );
    }
  }
  return r;
}

/** The quantization scheme a recipe selects. */
export function recipeScheme(r: Recipe): QuantScheme {
  if (!isSchemeName(r.schemeName)) throw new Error(`unknown scheme ${r.schemeName}`);
  return makeScheme(r.schemeName, { groupSize: r.groupSize });
}

/** The recipe as YAML-ready data (written to the run record). */
export function recipeToObject(r: Recipe): Obj {
  const name = Object.entries(MODIFIERS).find(([, m]) => m === r.method)![0];
  const mod: Obj = { scheme: r.schemeName.toUpperCase() };
  if (r.groupSize !== undefined) mod.group_size = r.groupSize;
  if (r.method !== "rtn") mod.alpha = r.alpha;
  if (r.method === "masquant") {
    Object.assign(mod, {
      epochs: r.epochs,
      learning_rate: r.learningRate,
      weight_decay: r.weightDecay,
      loss_weights: r.lossWeights,
      chain: r.chain,
      cmc: { enabled: r.cmc.enabled, rank_ratio: r.cmc.rankRatio, whiten: r.cmc.whiten, target: r.cmc.target },
    });
    if (r.modalities) mod.modalities = r.modalities;
  }
  return {
    quant_stage: { quant_modifiers: { [name]: mod } },
    calibration: { num_samples: r.numSamples, seed: r.seed, max_seq_length: r.maxSeqLength },
  };
}
