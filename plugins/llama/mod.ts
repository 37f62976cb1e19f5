/**
 * @module
 * Adapter for text-only Llama checkpoints (`LlamaForCausalLM`), with tied or separate lm_head.
 */
import {
  type Backend,
  Checkpoint,
  DecoderLM,
  type ModelAdapter,
  type MultimodalModel,
  type OpenOptions,
  parseLlamaConfig,
  type PreparedInput,
  readConfigJson,
  resolveNaming,
  type Sample,
  TextTokenizer,
} from "@masquant/core";

/** A Llama decoder-only model. */
export class LlamaModel extends DecoderLM {
  async prepare(sample: Sample): Promise<PreparedInput> {
    if (sample.kind === "tokens") return await this.prepareTokens(sample.ids);
    if (sample.media.length) {
      throw new Error(`${sample.source}: ${this.dir} is a text-only Llama model; the sample has media`);
    }
    if (!this.tokenizer) throw new Error(`${this.dir}: no tokenizer loaded; pass token ids instead`);
    const prompt = this.tokenizer.hasChatTemplate
      ? this.tokenizer.applyChatTemplate(sample.messages, { addGenerationPrompt: sample.addGenerationPrompt })
      : sample.messages.map((
        m,
      ) => (typeof m.content === "string" ? m.content : m.content.map((p) => p.type === "text" ? p.text : "").join("")))
        .join("\n");
    return await this.prepareTokens(
      this.tokenizer.encode(prompt, { addSpecialTokens: !this.tokenizer.hasChatTemplate }),
    );
  }
}

/** The Llama adapter. */
export const llamaAdapter: ModelAdapter = {
  id: "llama",
  matches(config) {
    const arch = config.architectures;
    return config.model_type === "llama" &&
      (!Array.isArray(arch) || arch.length === 0 || arch.includes("LlamaForCausalLM"));
  },
  async open(dir: string, backend: Backend, options: OpenOptions = {}): Promise<MultimodalModel> {
    const config = await readConfigJson(dir);
    const cfg = parseLlamaConfig(config, `${dir}/config.json`);
    const checkpoint = await Checkpoint.open(dir);
    const naming = resolveNaming(
      checkpoint,
      [{
        layers: "model.layers",
        embed: "model.embed_tokens.weight",
        norm: "model.norm.weight",
        lmHead: "lm_head.weight",
      }],
      dir,
      cfg.text.tieWordEmbeddings,
    );
    let tokenizer: TextTokenizer | undefined;
    if (options.tokenizer !== false) {
      try {
        tokenizer = await TextTokenizer.fromDir(dir);
      } catch {
        tokenizer = undefined; // token-id use only (e.g. checkpoints shipped without tokenizer files)
      }
    }
    return new LlamaModel({
      dir,
      family: "llama",
      config,
      backend,
      checkpoint,
      tokenizer,
      text: cfg.text,
      naming,
      modalities: ["text"],
    });
  },
};
