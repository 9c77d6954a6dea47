// The Node socket.io v4 peer: the same app as the Python peers.
//   node benchmarks/apps/socketio_server.mjs --port 8765
// Events: echo (acked with its data), join (room; acked), publish (room, data:
// emitted as "msg" to the room except the sender; acked).
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const portArg = process.argv.indexOf('--port');
const port = Number(process.argv[portArg + 1]);
const httpServer = createServer();
const io = new Server(httpServer, {
  transports: ['websocket'],
  serveClient: false,
  maxHttpBufferSize: 1e7,
});

io.on('connection', (socket) => {
  socket.on('echo', (data, ack) => ack(data));
  socket.on('join', (room, ack) => {
    socket.join(room);
    ack(true);
  });
  socket.on('publish', (room, data, ack) => {
    socket.to(room).emit('msg', data);
    ack(true);
  });
});

httpServer.listen(port, '127.0.0.1');
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
