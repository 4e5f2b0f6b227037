"""livecomments.js, the browser client (an ES module, docs/client.md), served by livecomments.edge.demo."""
