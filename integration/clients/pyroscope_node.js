#!/usr/bin/env node
// Real @pyroscope/nodejs client driver for flamepipe integration tests.
//
// Burns CPU in distinctively named functions while the SDK profiles the
// process (wall profile, optionally with CPU time, plus heap), then stops the
// SDK, which uploads the last wall profile before stop() resolves.
//
//   node pyroscope_node.js --server http://127.0.0.1:4040 --app myapp \
//       --seconds 12 --tag env=test [--tag k=v ...] [--mode raw|multipart]
//       [--tenant ID] [--flush-ms 10000] [--no-cpu-time]
//
// --mode raw       (default) @pyroscope/nodejs 0.6.4: POST /ingest, body is
//                  the gzipped pprof sent raw as application/octet-stream.
// --mode multipart @pyroscope/nodejs 0.6.1 (installed under the npm alias
//                  "pyroscope-nodejs-multipart"): POST /ingest, body is a
//                  multipart/form-data with one part "profile" (filename
//                  "profile") holding the gzipped pprof. 0.6.1 was the last
//                  release sending that shape; 0.6.2+ send it raw.
'use strict';

const PACKAGES = {
  raw: '@pyroscope/nodejs',
  multipart: 'pyroscope-nodejs-multipart',
};

function usage(msg) {
  if (msg) console.error(`error: ${msg}`);
  console.error(
    'usage: pyroscope_node.js --server URL --app NAME [--seconds N] [--tag k=v]... ' +
      '[--mode raw|multipart] [--tenant ID] [--flush-ms MS] [--no-cpu-time]'
  );
  process.exit(2);
}

function parseArgs(argv) {
  const a = { seconds: 12, tags: {}, mode: 'raw', tenant: '', flushMs: 10000, cpuTime: true };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${k} needs a value`);
      return argv[++i];
    };
    switch (k) {
      case '--server': a.server = val().replace(/\/+$/, ''); break;
      case '--app': a.app = val(); break;
      case '--seconds': a.seconds = Number(val()); break;
      case '--tag': {
        const t = val();
        const eq = t.indexOf('=');
        if (eq <= 0) usage(`tag must be k=v, got ${t}`);
        a.tags[t.slice(0, eq)] = t.slice(eq + 1);
        break;
      }
      case '--mode': a.mode = val(); break;
      case '--tenant': a.tenant = val(); break;
      case '--flush-ms': a.flushMs = Number(val()); break;
      case '--no-cpu-time': a.cpuTime = false; break;
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument ${k}`);
    }
  }
  if (!a.server) usage('--server is required');
  if (!a.app) usage('--app is required');
  if (!(a.seconds >= 0)) usage('--seconds must be a number');
  if (!(a.mode in PACKAGES)) usage(`--mode must be one of ${Object.keys(PACKAGES).join(', ')}`);
  return a;
}

function flamepipeFib(n) {
  return n < 2 ? n : flamepipeFib(n - 1) + flamepipeFib(n - 2);
}

function flamepipeBusyWork(deadline) {
  let acc = 0;
  while (Date.now() < deadline) {
    for (let i = 0; i < 100000; i++) acc = (acc * 31 + i) % 1000003;
  }
  return acc;
}

// Synchronous burn in short slices; yields to the event loop between slices
// so the SDK's flush timers and uploads can run.
async function flamepipeMainLoop(seconds) {
  const end = Date.now() + seconds * 1000;
  let rounds = 0;
  while (Date.now() < end) {
    flamepipeBusyWork(Math.min(end, Date.now() + 100));
    flamepipeFib(32);
    rounds++;
    await new Promise((r) => setImmediate(r));
  }
  return rounds;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const pkg = PACKAGES[a.mode];
  const mod = require(pkg);
  const Pyroscope = mod.default || mod;
  let version = 'unknown';
  try {
    // package.json is not in the package's "exports"; read it from disk.
    const path = require('node:path');
    const fs = require('node:fs');
    const pj = path.join(path.dirname(require.resolve(pkg)), '..', '..', 'package.json');
    version = JSON.parse(fs.readFileSync(pj, 'utf8')).version;
  } catch (_) {
    // unknown version; fine.
  }
  console.log(
    `@pyroscope/nodejs ${version} (mode=${a.mode}): app=${a.app} server=${a.server} ` +
      `seconds=${a.seconds} tags=${JSON.stringify(a.tags)}`
  );
  const config = {
    serverAddress: a.server,
    appName: a.app,
    tags: a.tags,
    flushIntervalMs: a.flushMs,
    wall: { collectCpuTime: a.cpuTime },
  };
  if (a.tenant) config.tenantID = a.tenant;
  Pyroscope.init(config);
  Pyroscope.start();
  const t0 = Date.now();
  const rounds = await flamepipeMainLoop(a.seconds);
  // stop() awaits any in-flight periodic upload, then exports the final wall
  // profile and awaits its upload (the heap profiler sends nothing on stop).
  await Pyroscope.stop();
  console.log(`done: rounds=${rounds} elapsed=${((Date.now() - t0) / 1000).toFixed(1)}s`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e && e.stack ? e.stack : e);
    process.exit(1);
  }
);
