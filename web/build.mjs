// build.mjs copies the console (src/) and Apache ECharts into dist/.
//
//   node build.mjs [outdir]    (outdir defaults to dist, relative to this file)
//
// The output depends only on src/ and the echarts version pinned in
// package-lock.json: files are copied byte for byte, with no timestamps or
// content hashes, so a rebuild gives an identical tree (check-dist.sh).
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, process.argv[2] ?? "dist");
const src = join(here, "src");
const echarts = join(here, "node_modules", "echarts");

function copyTree(from, to) {
  mkdirSync(to, { recursive: true });
  for (const name of readdirSync(from).sort()) {
    const f = join(from, name);
    const t = join(to, name);
    if (statSync(f).isDirectory()) copyTree(f, t);
    else writeFileSync(t, readFileSync(f));
  }
}

let pkg;
try {
  pkg = JSON.parse(readFileSync(join(echarts, "package.json"), "utf8"));
} catch {
  console.error("build.mjs: node_modules/echarts is missing; run `npm ci` in web/ first");
  process.exit(1);
}
const want = JSON.parse(readFileSync(join(here, "package.json"), "utf8")).dependencies.echarts;
if (pkg.version !== want) {
  console.error(`build.mjs: node_modules has echarts ${pkg.version}, package.json pins ${want}; run \`npm ci\``);
  process.exit(1);
}

rmSync(out, { recursive: true, force: true });
copyTree(src, out);
cpSync(join(echarts, "dist", "echarts.min.js"), join(out, "static", "echarts.min.js"));
cpSync(join(echarts, "LICENSE"), join(out, "static", "echarts.LICENSE.txt"));
console.log(`build.mjs: wrote ${out} (echarts ${pkg.version})`);
