/** Adapter registry: plugins register themselves; openModel picks the adapter from config.json. */
import type { Backend } from "../tensor/mod.ts";
import { readConfigJson } from "../io/config.ts";
import type { ModelAdapter, MultimodalModel, OpenOptions } from "./adapter.ts";

const adapters: ModelAdapter[] = [];

/** Adds an adapter (later registrations take precedence). Re-registering an id replaces it. */
export function registerAdapter(a: ModelAdapter): void {
  const i = adapters.findIndex((x) => x.id === a.id);
  if (i >= 0) adapters.splice(i, 1);
  adapters.unshift(a);
}

/** The registered adapters, most recent first. */
export function registeredAdapters(): readonly ModelAdapter[] {
  return adapters;
}

/** Thrown when no adapter recognises a checkpoint. */
export class UnknownArchitectureError extends Error {
  /** Creates the error for a config file. */
  constructor(readonly configPath: string, detail: string) {
    super(
      `${configPath}: unknown architecture ${detail}; supported: ${
        adapters.map((a) => a.id).join(", ") || "(none registered)"
      } — add an adapter plugin (--plugin) for this family`,
    );
    this.name = "UnknownArchitectureError";
  }
}

/** The adapter for a config, or a clear error. */
export function findAdapter(config: Record<string, unknown>, configPath = "config.json"): ModelAdapter {
  const a = adapters.find((x) => x.matches(config));
  if (a) return a;
  const arch = JSON.stringify(config.architectures ?? config.model_type ?? "(none)");
  throw new UnknownArchitectureError(configPath, arch);
}

/** Opens a checkpoint directory with the adapter its config.json selects. */
export async function openWith(dir: string, backend: Backend, options?: OpenOptions): Promise<MultimodalModel> {
  const config = await readConfigJson(dir);
  return await findAdapter(config, `${dir}/config.json`).open(dir, backend, options);
}
