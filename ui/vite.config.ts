// Builds the dashboard into the Python package (faasd_py/ui/static), which the gateway serves
// at /ui/: every asset is local, named by a hash of its content.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/ui/",
  build: {
    outDir: "../faasd_py/ui/static",
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2022",
    sourcemap: false,
    // One small bundle: the page is served by the gateway from memory-cheap static files.
    chunkSizeWarningLimit: 200,
    modulePreload: { polyfill: false },
  },
});
