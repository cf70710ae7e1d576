"""End-to-end tests over real loopback sockets: the official JavaScript clients (Node.js,
Chromium), raw and Autobahn clients, and hostile load."""
