// The four-step trivial saga as a Restate service: one handler whose four
// steps are `ctx.run` calls that do nothing but count, so each step's
// completion is a journal entry the server persists before the handler goes
// on (the same shape as examples/loadgen.rs: reserve_seat, authorize_payment,
// award_miles, confirm_booking, each adding one to `done`).
//
//   node service.mjs PORT      serves HTTP/2 (h2c) on 127.0.0.1:PORT
import * as http2 from "node:http2";
import * as restate from "@restatedev/restate-sdk";

const STEPS = ["reserve_seat", "authorize_payment", "award_miles", "confirm_booking"];

const saga = restate.service({
  name: "saga",
  handlers: {
    run: async (ctx, booking) => {
      let done = booking.done;
      for (const step of STEPS) {
        done = await ctx.run(step, async () => done + 1);
      }
      return { n: booking.n, done };
    },
  },
});

const port = Number(process.argv[2] ?? 9080);
const server = http2.createServer(restate.createEndpointHandler({ services: [saga] }));
server.listen(port, "127.0.0.1", () => {
  console.error(`restate service on 127.0.0.1:${port}`);
});
