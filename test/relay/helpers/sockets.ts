/** Loopback socket helpers for relay tests: bounded waits, cleanup by the caller. */
import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import { StreamFramer } from '../../../protocol/stun/index.js';

/** A UDP socket on 127.0.0.1 with a queue of received datagrams. */
export class UdpEndpoint {
  readonly socket = dgram.createSocket('udp4');
  private readonly queue: Buffer[] = [];
  private waiter: ((b: Buffer) => void) | null = null;

  /** Binds 127.0.0.1 on `port` (0: an ephemeral one). */
  static async open(port = 0): Promise<UdpEndpoint> {
    const e = new UdpEndpoint();
    await new Promise<void>((r) => e.socket.bind(port, '127.0.0.1', r));
    e.socket.on('message', (m) => {
      if (e.waiter) {
        const w = e.waiter;
        e.waiter = null;
        w(m);
      } else e.queue.push(m);
    });
    return e;
  }

  get port(): number {
    return this.socket.address().port;
  }

  send(data: Uint8Array, port: number, host = '127.0.0.1'): void {
    this.socket.send(data, port, host);
  }

  /** Next datagram, or an error after `ms`. */
  next(ms = 3000): Promise<Buffer> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiter = null;
        reject(new Error('timed out waiting for a datagram'));
      }, ms);
      this.waiter = (b) => {
        clearTimeout(t);
        resolve(b);
      };
    });
  }

  /** The next datagram, or null if none arrives within `ms`. */
  async maybeNext(ms = 300): Promise<Buffer | null> {
    try {
      return await this.next(ms);
    } catch {
      return null;
    }
  }

  /** Resolves true if nothing arrives within `ms`. */
  async silent(ms = 300): Promise<boolean> {
    try {
      await this.next(ms);
      return false;
    } catch {
      return true;
    }
  }

  close(): Promise<void> {
    return new Promise((r) => this.socket.close(() => r()));
  }
}

/** A UDP echo peer on 127.0.0.1. */
export async function udpEcho(): Promise<{ port: number; close(): Promise<void> }> {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => s.send(m, r.port, r.address));
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return { port: s.address().port, close: () => new Promise((r) => s.close(() => r())) };
}

/** A TCP or TLS connection to the relay that yields whole frames. */
export class StreamEndpoint {
  private readonly framer = new StreamFramer(70_000);
  private readonly queue: Uint8Array[] = [];
  private waiter: ((b: Uint8Array) => void) | null = null;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk) => {
      this.framer.push(chunk);
      for (let r = this.framer.next(); r.ok && r.value; r = this.framer.next()) {
        const f = r.value.bytes.slice();
        if (this.waiter) {
          const w = this.waiter;
          this.waiter = null;
          w(f);
        } else this.queue.push(f);
      }
    });
    socket.on('error', () => {});
  }

  static connect(port: number, host = '127.0.0.1'): Promise<StreamEndpoint> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, host, () => resolve(new StreamEndpoint(s)));
      s.once('error', reject);
    });
  }

  /** A TLS connection that trusts `ca`, once its handshake is done. */
  static connectTls(port: number, ca: Buffer, host = '127.0.0.1'): Promise<StreamEndpoint> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({ host, port, ca });
      s.once('secureConnect', () => resolve(new StreamEndpoint(s)));
      s.once('error', (err) => {
        s.destroy();
        reject(err);
      });
    });
  }

  send(data: Uint8Array): void {
    this.socket.write(data);
  }

  next(ms = 3000): Promise<Uint8Array> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiter = null;
        reject(new Error('timed out waiting for a frame'));
      }, ms);
      this.waiter = (b) => {
        clearTimeout(t);
        resolve(b);
      };
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
