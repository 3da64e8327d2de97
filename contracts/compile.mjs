// Compile contracts/src/*.sol with solc-js into the Python package's artifacts (ABI, bytecode,
// compiler version and settings). `--check` compiles and fails if the committed artifacts differ.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = path.dirname(fileURLToPath(import.meta.url));
const srcDir = path.join(here, "src");
const outDir = path.join(here, "..", "src", "openpod", "adapters", "chain", "artifacts");
const check = process.argv.includes("--check");

const settings = {
  optimizer: { enabled: true, runs: 10000 },
  viaIR: true,
  evmVersion: "cancun",
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.gasEstimates"] } },
};
const sources = {};
for (const name of fs.readdirSync(srcDir).filter((f) => f.endsWith(".sol")).sort()) {
  sources[name] = { content: fs.readFileSync(path.join(srcDir, name), "utf8") };
}
function findImports(importPath) {
  const file = path.join(here, "node_modules", importPath);
  if (!fs.existsSync(file)) return { error: `not found: ${importPath} (run npm ci in contracts/)` };
  return { contents: fs.readFileSync(file, "utf8") };
}
const output = JSON.parse(
  solc.compile(JSON.stringify({ language: "Solidity", sources, settings }), { import: findImports }),
);
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);

const compiler = { version: solc.version(), settings: { ...settings, outputSelection: undefined } };
let stale = [];
for (const [file, contracts] of Object.entries(output.contracts)) {
  if (!sources[file]) continue;
  for (const [name, c] of Object.entries(contracts)) {
    const artifact = {
      contractName: name,
      sourceName: `contracts/src/${file}`,
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      compiler,
    };
    const text = JSON.stringify(artifact, null, 1) + "\n";
    const target = path.join(outDir, `${name}.json`);
    const current = fs.existsSync(target) ? fs.readFileSync(target, "utf8") : null;
    if (check) {
      if (current !== text) stale.push(path.relative(path.join(here, ".."), target));
    } else if (current !== text) {
      fs.mkdirSync(outDir, { recursive: true });
      fs.writeFileSync(target, text);
      console.log(`wrote ${path.relative(path.join(here, ".."), target)}`);
    }
  }
}
if (stale.length) {
  console.error(`contract artifacts differ from contracts/src: ${stale.join(", ")}`);
  console.error("run `make solidity` (cd contracts && npm run compile) and commit them");
  process.exit(1);
}
