/** Entry points of the command-line tools: error handling and exit codes. */
import { parseQuantizeArgs, QUANTIZE_HELP, quantizeCommand, UsageError } from "./quantize.ts";

/**
 * Error classes whose message is a complete sentence for the user (printed as one line, no stack trace).
 * Any other error is a bug and keeps its stack trace.
 */
export const USER_ERRORS: ReadonlySet<string> = new Set([
  "UsageError",
  "RecipeError",
  "CalibrationSetError",
  "PluginError",
  "RunConfigError",
  "NonFiniteError",
  "CheckpointError",
  "SafetensorsError",
  "ConfigError",
  "ModelFormatError",
  "UnknownArchitectureError",
  "QuantizedFormatError",
  "PromptMediaError",
  "ImageDecodeError",
  "WavFormatError",
  "AudioClipError",
  "TokenizerFileError",
  "ChatTemplateError",
  "ImageProcessorConfigError",
  "QwenVisionProcessorError",
  "QwenMediaError",
  "VisionTowerError",
  "AudioTowerError",
  "PositionLayoutError",
  "ResampleError",
  "AtomicWriteError",
]);

/** Runs a command; returns the exit code (0 ok, 1 failure, 2 usage). */
export async function runCli(command: "quantize" | "eval", argv: string[]): Promise<number> {
  try {
    if (command === "quantize") {
      if (argv.length === 0) {
        const { runDemo } = await import("./demo.ts");
        await runDemo();
        return 0;
      }
      const args = await parseQuantizeArgs(argv);
      if (args.help) {
        console.log(QUANTIZE_HELP);
        return 0;
      }
      // The command line needs no states after the run: do not keep them (memory independent of depth).
      await quantizeCommand(args, { keepStates: false });
      return 0;
    }
    const { evalMain } = await import("./eval.ts");
    return await evalMain(argv);
  } catch (e) {
    const err = e as Error;
    if (USER_ERRORS.has(err?.name) || USER_ERRORS.has(err?.constructor?.name)) {
      console.error(`error: ${err.message}`);
      return e instanceof UsageError ? 2 : 1;
    }
    throw e;
  }
}

if (import.meta.main) {
  const [command, ...rest] = Deno.args;
  if (command !== "quantize" && command !== "eval") {
    console.error("usage: deno run -A cli/main.ts quantize|eval [options] (or: deno task quantize / deno task eval)");
    Deno.exit(2);
  }
  Deno.exit(await runCli(command, rest));
}
