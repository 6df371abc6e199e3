// Starting points for new workflows.

export const templates = {
  pipeline: {
    label: "Request pipeline (6 nodes)",
    document: (name) => ({
      name,
      nodes: [
        { id: "http-in", type: "trigger.http", name: "HTTP request" },
        { id: "auth", type: "plugin", name: "Check API key", config: { role: "read" } },
        { id: "cache", type: "cache.lookup", name: "Cache lookup" },
        { id: "render", type: "plugin", name: "Render", config: { plugin: "render" } },
        { id: "store", type: "cache.store", name: "Cache store" },
        { id: "http-out", type: "respond", name: "Respond" },
      ],
      edges: [
        { from: "http-in", to: "auth" },
        { from: "auth", to: "cache" },
        { from: "cache", to: "render" },
        { from: "cache", to: "http-out" },
        { from: "render", to: "store" },
        { from: "store", to: "http-out" },
      ],
      metadata: { template: "pipeline" },
    }),
  },
  empty: {
    label: "Empty",
    document: (name) => ({ name, nodes: [], edges: [] }),
  },
};
