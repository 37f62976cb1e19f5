/** Checkpoint and media I/O: safetensors, checkpoints, configs, tokenizers, images and audio. */
export * from "./safetensors.ts";
export * from "./checkpoint.ts";
export * from "./atomic.ts";
export * from "./config.ts";
export * from "./float16.ts";
export * from "./tokenizer.ts";
export * from "./chat_template.ts";
export * from "./image.ts";
export * from "./resample.ts";
export * from "./wav.ts";
export * from "./audio_resample.ts";
export * from "./mel.ts";
export * from "./processor_fields.ts";
