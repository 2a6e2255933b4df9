/**
 * Each command's endpoint id when `--as` (or HOMELINK_AS, or a profile) gives none. Distinct on
 * purpose: the service keeps one presence per id, so two commands sharing a default would
 * replace each other. `receive` is `hub-2` because the demo page sends files to `hub-2`, and
 * `listen` is `hub-1`, the peer the demo page and the README dial.
 */
export const DEFAULT_IDS = {
  listen: 'hub-1',
  receive: 'hub-2',
  dial: 'app-1',
  send: 'app-2',
  ping: 'app-3',
} as const;
