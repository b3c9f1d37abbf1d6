// build.mjs vendors Apache ECharts into the console: it copies
// node_modules/echarts/dist/echarts.min.js (and its licence) into
// src/static/vendor/, the only files of the console that are not written
// by hand. src/ is embedded as it is (web.go), so there is no other build
// output to keep in step.
//
//   node build.mjs [outdir]    (outdir defaults to src/static/vendor)
//
// The result depends only on the echarts version pinned in
// package-lock.json: files are copied byte for byte (check-vendor.sh).
import { cpSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, process.argv[2] ?? join("src", "static", "vendor"));
const echarts = join(here, "node_modules", "echarts");

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

mkdirSync(out, { recursive: true });
cpSync(join(echarts, "dist", "echarts.min.js"), join(out, "echarts.min.js"));
cpSync(join(echarts, "LICENSE"), join(out, "echarts.LICENSE.txt"));
console.log(`build.mjs: wrote ${out} (echarts ${pkg.version})`);
