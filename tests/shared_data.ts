/**
 * Access to the optional `../shared` folder beside the project (real data and models used by some
 * tests). Tests that need it are registered through {@link sharedTest}: when the folder is absent
 * they are ignored and a visible "skipped: ../shared not present" line is printed.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Absolute path of the shared folder (may not exist). */
export const SHARED_DIR: string = fileURLToPath(new URL("../../shared/", import.meta.url));

/** Absolute path of a file or folder inside ../shared, or undefined when it is absent. */
export function sharedPath(rel: string): string | undefined {
  const p = SHARED_DIR + rel;
  return existsSync(p) ? p : undefined;
}

/** Registers a test that needs `rel` inside ../shared; skips visibly when it is missing. */
export function sharedTest(name: string, rel: string, fn: (path: string) => void | Promise<void>): void {
  const p = sharedPath(rel);
  if (!p) console.log(`skipped: ../shared not present (${name}: needs ../shared/${rel})`);
  Deno.test({ name, ignore: !p, fn: () => fn(p!) });
}
