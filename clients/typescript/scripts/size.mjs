#!/usr/bin/env node
// The library's size as an app ships it: src/index.ts bundled and minified by esbuild,
// then gzipped. A report, not a test: the budget is 10 KB gzipped (issue 10).

import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const BUDGET = 10 * 1024;

for (const entry of ["src/index.ts", "src/testing.ts"]) {
  const out = await build({
    entryPoints: [resolve(pkg, entry)],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2020",
    write: false,
  });
  const code = out.outputFiles[0].contents;
  const gz = gzipSync(code, { level: 9 }).length;
  const note = entry === "src/index.ts" ? ` (budget ${BUDGET} bytes: ${gz <= BUDGET ? "within" : "OVER"})` : " (test helper, not shipped in apps)";
  console.log(`${entry}: ${code.length} bytes minified, ${gz} bytes gzipped${note}`);
}
