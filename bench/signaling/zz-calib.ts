import { Miniflare } from 'miniflare';
import { profileIsolates, workerdThreadsMs, threadDelta } from './profile.js';
const code = `export default { fetch(req) { const n = Number(new URL(req.url).searchParams.get('n')); let x = 0; for (let i = 0; i < n; i++) x = (x * 31 + i) % 1000003; return new Response(String(x)); } };`;
const mf = new Miniflare({ modules: [{ type: 'ESModule', path: 'i.mjs', contents: code }], compatibilityDate: '2026-05-01', host: '127.0.0.1', port: 0, cf: false, inspectorPort: 0 });
try {
  const u = await mf.ready;
  for (const interval of [0]) {
    for (let r = 0; r < 3; r++) {
      const t0 = workerdThreadsMs();
      const iso = await profileIsolates(await mf.getInspectorURL(), async () => { for (let i = 0; i < 20; i++) await (await fetch(`${u}?n=3000000`)).text(); });
      const d = threadDelta(t0, workerdThreadsMs(), 1);
      console.log('threads', d.filter(t=>t.ms>0).map(t=>`${t.thread} ${t.ms}`).join(', '));
      for (const i of iso) if (i.busyMs > 0) console.log(i.isolate, 'time', i.busyMs.toFixed(1), 'samples', i.sampledMs.toFixed(1), 'program', i.programMs.toFixed(1));
    }
  }
} finally { await mf.dispose(); }
