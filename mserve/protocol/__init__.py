"""Wire codecs: arrays to and from each protocol's bodies and messages, for the server, the
client and the load generator alike. Pure functions over a Plan and arrays; never imports the
server."""
