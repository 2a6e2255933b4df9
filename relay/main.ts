/**
 * CLI entry. In production, from built JavaScript (`npm run build:js`):
 * `node dist/js/relay/main.js [--config file.json] [--flag value ...]`; in development from
 * the sources: `npx tsx relay/main.ts ...`.
 * Configuration errors print one line naming the field and exit 2. SIGTERM and
 * SIGINT start a graceful shutdown (no new allocations, bounded drain, close);
 * a second signal exits at once.
 */
import { configHelp, relayConfigFromArgs, ConfigError, type RelayConfig } from './config.js';
import { startRelay } from './index.js';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(configHelp() + '\n');
    return;
  }
  let config: RelayConfig;
  try {
    config = relayConfigFromArgs(argv, process.env);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`relay: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  const relay = await startRelay(config);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) process.exit(1);
    stopping = true;
    process.stdout.write(JSON.stringify({ t: new Date().toISOString(), level: 'info', event: 'signal', signal }) + '\n');
    relay.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // A worker that died on its own: stop the rest and exit non-zero, so the supervisor restarts us whole.
  void relay.failure?.then((err) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(JSON.stringify({ t: new Date().toISOString(), level: 'warn', event: 'worker_failed', message: err.message }) + '\n');
    relay.close().finally(() => process.exit(1));
  });
}

main().catch((e: unknown) => {
  process.stderr.write(`relay: failed to start: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
