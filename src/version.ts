/** The product version; `deno task build` stamps the same string into the binary's name. */
export const VERSION = "0.2.0";
