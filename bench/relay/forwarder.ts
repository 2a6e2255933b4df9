/**
 * The ceiling: a bare Node `dgram` ChannelData forwarder with no TURN state,
 * no auth and no policy. Per client address it opens one "relayed" socket on
 * first sight; ChannelData from the client loses its 4-byte header and goes
 * to the one peer; anything from the peer goes back to the client behind a
 * 4-byte ChannelData header (sent as two buffers, so no copy). Any relay
 * written on `dgram` does at least this much work per packet.
 *
 *   node --import tsx bench/relay/forwarder.ts <peer-port> [listen-port]
 */
import { createSocket, type Socket } from 'node:dgram';

const peerPort = Number(process.argv[2]);
const HOST = '127.0.0.1';
/** Where the echo peer listens (bench/relay/run.ts: an address of its own, not the relay's). */
const PEER_HOST = process.env.FORWARDER_PEER_HOST ?? '127.0.0.1';
/** Same socket buffer sizes as every relay in the run gets from the kernel defaults' point of view: generous, to avoid drops. */
const BUF = 4 << 20;
/**
 * Sockets get a lookup that answers IP literals synchronously: dgram's default
 * `dns.lookup` defers every send to a process.nextTick even for an IP literal
 * (measured here: about 1 µs of CPU per packet). The ceiling should be the
 * fastest plain forwarder, so this is on; FORWARDER_SYNC_LOOKUP=0 turns it off
 * to measure what the default costs.
 */
const syncLookup = process.env.FORWARDER_SYNC_LOOKUP !== '0';
const lookup = (address: string, _opts: unknown, cb: (err: Error | null, address: string, family: number) => void): void => cb(null, address, 4);
const opts = { type: 'udp4' as const, recvBufferSize: BUF, sendBufferSize: BUF, ...(syncLookup ? { lookup } : {}) };
const server = createSocket(opts);
const relays = new Map<string, Socket>();

server.on('message', (msg, rinfo) => {
  if (msg.length < 4 || (msg[0]! & 0xc0) !== 0x40) return;
  const len = msg.readUInt16BE(2);
  if (len + 4 > msg.length) return;
  const key = `${rinfo.address}:${rinfo.port}`;
  let relay = relays.get(key);
  if (!relay) {
    const r = createSocket(opts);
    const header = Buffer.from([msg[0]!, msg[1]!, 0, 0]);
    const clientPort = rinfo.port;
    const clientAddr = rinfo.address;
    r.on('message', (data) => {
      const h = Buffer.allocUnsafe(4);
      h[0] = header[0]!;
      h[1] = header[1]!;
      h.writeUInt16BE(data.length, 2);
      server.send([h, data], clientPort, clientAddr);
    });
    r.on('error', () => {});
    r.bind(0, HOST);
    relays.set(key, r);
    relay = r;
  }
  relay.send(msg.subarray(4, 4 + len), peerPort, PEER_HOST);
});
server.on('error', () => {});
server.bind(Number(process.argv[3] ?? 0), HOST, () => {
  process.stdout.write(`port=${server.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
