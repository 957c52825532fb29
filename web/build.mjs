// Builds the desktop and the wallboard into dist/ (committed: the hub embeds it, so `cargo build` needs no
// Node). `node build.mjs --check` builds in memory and fails when dist/ differs, i.e.
// when someone changed src/ and did not rebuild.
import * as esbuild from "esbuild";
import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "src", "desktop");
const wall = join(here, "src", "wallboard");
const dist = join(here, "dist");
const check = process.argv.includes("--check");

const common = {
  bundle: true,
  minify: true,
  write: false,
  charset: "utf8",
  legalComments: "none",
  logLevel: "warning",
  absWorkingDir: here,
};

const js = await esbuild.build({
  ...common,
  entryPoints: [join(src, "main.ts")],
  outfile: join(dist, "desktop.js"),
  format: "esm",
  target: ["es2022", "chrome110", "firefox110", "safari16"],
});
const css = await esbuild.build({
  ...common,
  entryPoints: [join(src, "desktop.css")],
  outfile: join(dist, "desktop.css"),
  target: ["chrome110", "firefox110", "safari16"],
});

const wallJs = await esbuild.build({
  ...common,
  entryPoints: [join(wall, "main.ts")],
  outfile: join(dist, "wallboard.js"),
  format: "esm",
  target: ["es2022", "chrome110", "firefox110", "safari16"],
});
const wallCss = await esbuild.build({
  ...common,
  entryPoints: [join(wall, "wallboard.css")],
  outfile: join(dist, "wallboard.css"),
  target: ["chrome110", "firefox110", "safari16"],
});

const files = new Map([
  ["desktop.js", js.outputFiles[0].contents],
  ["desktop.css", css.outputFiles[0].contents],
  ["index.html", readFileSync(join(src, "index.html"))],
  ["icon.svg", readFileSync(join(src, "icon.svg"))],
  ["wallboard.js", wallJs.outputFiles[0].contents],
  ["wallboard.css", wallCss.outputFiles[0].contents],
  ["wallboard.html", readFileSync(join(wall, "index.html"))],
]);

let stale = [];
for (const [name, bytes] of files) {
  const path = join(dist, name);
  if (check) {
    if (!existsSync(path) || !Buffer.from(readFileSync(path)).equals(Buffer.from(bytes))) stale.push(name);
  } else {
    mkdirSync(dist, { recursive: true });
    writeFileSync(path, bytes);
  }
}

const gz = (name) => gzipSync(files.get(name), { level: 9 }).length;
const total = gz("desktop.js") + gz("desktop.css");
console.log(
  `desktop: js ${files.get("desktop.js").length} B (${gz("desktop.js")} B gzipped), ` +
    `css ${files.get("desktop.css").length} B (${gz("desktop.css")} B gzipped); ` +
    `JS+CSS gzipped ${(total / 1024).toFixed(1)} KB (budget 100 KB); ` +
    `wallboard: JS+CSS gzipped ${((gz("wallboard.js") + gz("wallboard.css")) / 1024).toFixed(1)} KB`,
);
if (stale.length) {
  console.error(`web/dist is stale (${stale.join(", ")}): run \`npm run build\` in web/ and commit web/dist`);
  process.exit(1);
}
