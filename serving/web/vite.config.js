// The operator console and the demo shop page: two HTML entries, assets under /web/ (see serving/web.py).
import { defineConfig } from "vite";

const src = new URL("./src/", import.meta.url).pathname;

export default defineConfig({
  root: src,
  base: "/web/",
  // `npm run dev`: the API and the built widget come from `lingxi serve` on its default port
  server: { proxy: { "/v1": "http://127.0.0.1:8000", "/widget.js": "http://127.0.0.1:8000" } },
  build: {
    outDir: new URL("./dist/", import.meta.url).pathname,
    emptyOutDir: true,
    rolldownOptions: {
      input: { console: `${src}console/index.html`, demo: `${src}demo/index.html` },
    },
  },
});
