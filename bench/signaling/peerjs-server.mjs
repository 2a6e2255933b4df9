// PeerJS's own signaling server (the `peer` package), on loopback, for the comparison in
// bench/signaling/run.ts. Runs in its own process so its CPU time can be read apart from the
// load generator's. Prints the port once listening; stops when stdin closes.
import { PeerServer } from 'peer';

const server = PeerServer({ host: '127.0.0.1', port: 0, path: '/', key: 'peerjs', concurrent_limit: 100_000, alive_timeout: 600_000, expire_timeout: 60_000 }, (http) => {
  console.log(`port ${http.address().port}`);
});
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
void server;
