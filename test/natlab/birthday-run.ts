/**
 * Runs the port-prediction experiment (birthday.ts) between a fresh symmetric home and a
 * fresh port-restricted home, a number of times, with our own probe server in `pub` telling
 * the easy side its mapping.
 */
import { PUB, type Lab } from './lab.js';
import { DEFAULT_GUESSES, DEFAULT_HARD_SOCKETS, hitProbability, type BirthdayEasy, type BirthdayHard, type BirthdayResult } from './birthday.js';
import { onLines, tsxArgs, waitForLine } from './support.js';

const SCRIPT = 'test/natlab/birthday.ts';
/** The probe server's UDP port for this experiment (next to TURN's 3478). */
const PROBE_PORT = 3479;
/** Bound on one attempt's processes becoming ready and reporting. */
const STEP_TIMEOUT_MS = 20_000;

export interface BirthdayAttempt extends Partial<BirthdayResult> {
  readonly error?: string;
}

export interface BirthdayReport {
  readonly sockets: number;
  readonly guesses: number;
  readonly attempts: readonly BirthdayAttempt[];
  readonly hits: number;
  readonly expectedShare: number;
}

/** Runs `count` attempts one after another, each on new homes (fresh conntrack state). */
export async function runBirthdayAttempts(lab: Lab, count: number): Promise<BirthdayReport> {
  const probe = lab.spawn(lab.pub, process.execPath, tsxArgs('test/natlab/probe.ts', 'server', JSON.stringify({ udp: [{ host: PUB.relay, port: PROBE_PORT }], tcp: [] })));
  const attempts: BirthdayAttempt[] = [];
  try {
    await waitForLine(probe, /^ready$/, STEP_TIMEOUT_MS, 'probe server');
    for (let i = 0; i < count; i++) attempts.push(await attempt(lab));
  } finally {
    await probe.stop();
  }
  return {
    sockets: DEFAULT_HARD_SOCKETS,
    guesses: DEFAULT_GUESSES,
    attempts,
    hits: attempts.filter((a) => a.hit).length,
    expectedShare: hitProbability(DEFAULT_HARD_SOCKETS, DEFAULT_GUESSES),
  };
}

async function attempt(lab: Lab): Promise<BirthdayAttempt> {
  const hardHome = await lab.addHome('symmetric');
  const easyHome = await lab.addHome('port-restricted');
  try {
    const easyCfg: BirthdayEasy = { probe: { host: PUB.relay, port: PROBE_PORT }, hardAddress: hardHome.wanAddress, guesses: DEFAULT_GUESSES };
    const easy = lab.spawn(easyHome.hosts[0]!.ns, process.execPath, tsxArgs(SCRIPT, 'easy', JSON.stringify(easyCfg)));
    const mappedLine = await waitForLine(easy, /^mapped /, STEP_TIMEOUT_MS, 'easy side');
    const [host, port] = mappedLine.slice('mapped '.length).split(':');
    const hardCfg: BirthdayHard = { target: { host: host!, port: Number(port) }, sockets: DEFAULT_HARD_SOCKETS };
    const hard = lab.spawn(hardHome.hosts[0]!.ns, process.execPath, tsxArgs(SCRIPT, 'hard', JSON.stringify(hardCfg)));
    await waitForLine(hard, /^armed$/, STEP_TIMEOUT_MS, 'hard side');
    const result = new Promise<BirthdayResult>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('easy side did not report')), STEP_TIMEOUT_MS);
      onLines(easy, (l) => {
        if (!l.startsWith('R ')) return;
        clearTimeout(t);
        resolve(JSON.parse(l.slice(2)) as BirthdayResult);
      });
    });
    easy.child.stdin?.write('go\n');
    return await result;
  } catch (e) {
    return { error: String(e) };
  } finally {
    await lab.removeHome(hardHome);
    await lab.removeHome(easyHome);
  }
}
