/** Adapter plugins: the built-in families, and modules named with --plugin. */
import { type ModelAdapter, registerAdapter, registeredAdapters } from "@masquant/core";
import { llamaAdapter } from "@masquant/plugin-llama";
import { llavaAdapter } from "@masquant/plugin-llava";
import { qwen2_5VlAdapter } from "@masquant/plugin-qwen-vl";
import { qwen2_5OmniAdapter } from "@masquant/plugin-qwen-omni";

/** Registers the adapters shipped with masquant. */
export function registerBuiltinPlugins(): void {
  for (const a of [llamaAdapter, llavaAdapter, qwen2_5VlAdapter, qwen2_5OmniAdapter]) registerAdapter(a);
}

/** Thrown when a plugin module cannot be used. */
export class PluginError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "PluginError";
  }
}

function isAdapter(v: unknown): v is ModelAdapter {
  const a = v as ModelAdapter;
  return !!a && typeof a === "object" && typeof a.id === "string" && typeof a.matches === "function" &&
    typeof a.open === "function";
}

/**
 * Imports plugin modules (paths or URLs). A module registers its adapter itself (registerAdapter from
 * the core) or exports it as `default` or `adapter`; exported adapters are registered here.
 */
export async function loadPlugins(modules: readonly string[]): Promise<void> {
  for (const m of modules) {
    const url = /^[a-z]+:/.test(m) ? m : new URL(m, `file://${Deno.cwd()}/`).href;
    const before = registeredAdapters().length;
    let mod: Record<string, unknown>;
    try {
      mod = await import(url);
    } catch (e) {
      throw new PluginError(`--plugin ${m}: the module could not be imported (${(e as Error).message.split("\n")[0]})`);
    }
    let found = registeredAdapters().length > before;
    for (const k of ["default", "adapter"]) {
      if (isAdapter(mod[k])) {
        registerAdapter(mod[k] as ModelAdapter);
        found = true;
      }
    }
    if (!found) {
      throw new PluginError(
        `--plugin ${m}: the module neither registers an adapter nor exports one as "default" or "adapter"`,
      );
    }
  }
}
