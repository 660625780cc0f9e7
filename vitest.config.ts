import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.ts", "test/**/*.test.ts"],
    exclude: ["**/dist/**", "**/node_modules/**"],
    globalSetup: ["test/globalSetup.ts"],
    reporters: ["default", "./test/SummaryReporter.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000
  }
})
