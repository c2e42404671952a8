/** Progress lines on stderr, so a long run shows what it is doing while stdout stays for the report or the JSON. */

const startedAt = performance.now()

const clock = (): string => {
  const s = Math.floor((performance.now() - startedAt) / 1000)
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`
}

export const log = (section: string, message: string): void => {
  process.stderr.write(`[${clock()}] ${section}: ${message}\n`)
}
