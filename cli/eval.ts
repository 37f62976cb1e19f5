/** `deno task eval` (placeholder until the evaluation command lands). */
export function evalMain(_argv: string[]): Promise<number> {
  console.error("eval: not available yet");
  return Promise.resolve(1);
}
