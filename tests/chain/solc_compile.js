#!/usr/bin/env node
// Reads a solc standard-JSON input on stdin, compiles it with solc-js
// (node_modules/solc, no network access) and writes the standard-JSON output
// to stdout.  Used by tests/chain/compile.py.
'use strict';
const solc = require('solc');

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const out = solc.compile(input);
  process.stdout.write(out);
  process.stdout.write('\n');
  process.stderr.write('solc ' + solc.version() + '\n');
});
