/**
 * "Did you mean" for mistyped commands and flags: the closest known name by edit distance, when
 * it is close enough to be a typo rather than a different word. Portable.
 */

/** Levenshtein distance (insert, delete, substitute; each costs 1). */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * Largest distance still taken for a typo: a third of the word, at least 1 and at most 3 (two
 * swapped letters cost 2; `--singaling` for `--signaling` is 2 of 9).
 */
function maxTypoDistance(word: string): number {
  return Math.max(1, Math.min(3, Math.floor(word.length / 3)));
}

/** The known name nearest to `input` if it looks like a typo of it (a prefix counts too), else null. */
export function suggest(input: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let bestD = Infinity;
  for (const k of known) {
    const d = k.startsWith(input) && input.length >= 2 ? 0.5 : editDistance(input, k);
    if (d < bestD) {
      best = k;
      bestD = d;
    }
  }
  return best !== null && bestD <= maxTypoDistance(input) ? best : null;
}
