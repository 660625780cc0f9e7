/**
 * Vitest global setup. Suites that need a private broker node start it through
 * `@effect-amqp/testing`; this file is where a shared node per run is provided.
 */
export default function setup(): void {}
