/**
 * The Node signaling socket (client/node-websocket.ts) against a real `ws` server on loopback that
 * would accept permessage-deflate: the upgrade offers no extension, none is in use, and frames
 * pass both ways as they are.
 */
import type { IncomingMessage } from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeWebSocket } from '../../client/node-websocket.js';

let wss: WebSocketServer;
let url: string;

beforeAll(async () => {
  wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: { threshold: 0 } });
  await new Promise<void>((r) => wss.once('listening', r));
  url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}/`;
});
afterAll(() => new Promise<void>((r) => wss.close(() => r())));

describe('nodeWebSocket', () => {
  it('offers no permessage-deflate, and frames pass both ways uncompressed', async () => {
    const server = new Promise<{ ws: WebSocket; req: IncomingMessage }>((r) => wss.once('connection', (ws, req) => r({ ws, req })));
    const client = nodeWebSocket(url, ['homelink.v1']);
    const got: string[] = [];
    client.onmessage = (e) => got.push(String(e.data));
    const opened = new Promise<void>((r) => (client.onopen = () => r()));
    const { ws, req } = await server;
    await opened;
    expect(req.headers['sec-websocket-extensions']).toBeUndefined();
    expect(ws.extensions).toBe('');
    const echoed = new Promise<string>((r) => ws.once('message', (d) => r(String(d))));
    client.send(JSON.stringify({ type: 'ping', n: 1 }));
    expect(await echoed).toBe('{"type":"ping","n":1}');
    ws.send('{"type":"pong"}');
    await expect.poll(() => got).toEqual(['{"type":"pong"}']);
    client.close(1000, 'done');
  });
});
