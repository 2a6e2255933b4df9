/** The sans-IO TURN server core: state machine, auth, counters and defaults. */
export * from './server.js';
export * from './auth.js';
export * from './counters.js';
export * from './defaults.js';
