/** The masquant version (kept equal to the version in deno.json). */
export const VERSION = "0.1.0";
