"""The demo page's static files (index.html, app.js, style.css), served by livecomments.edge.demo."""
