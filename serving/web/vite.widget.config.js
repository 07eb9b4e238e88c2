// The embeddable chat widget: one self-contained IIFE script, dist/widget.js (CSS inlined, no imports).
import { defineConfig } from "vite";

export default defineConfig({
  publicDir: false,
  build: {
    outDir: new URL("./dist/", import.meta.url).pathname,
    emptyOutDir: false,
    target: "es2019",
    lib: {
      entry: new URL("./src/widget/main.js", import.meta.url).pathname,
      name: "LingxiChat",
      formats: ["iife"],
      fileName: () => "widget.js",
    },
  },
});
