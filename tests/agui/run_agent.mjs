// Runs the official @ag-ui/client HttpAgent against an AG-UI endpoint and prints every event
// it receives (after the client's own validation and ordering checks) as one JSON line.
//
//   node tests/agui/run_agent.mjs <url> <input-json> [<answers-json>]
//
// <input-json>: {threadId, runId?, messages?, tools?, context?, forwardedProps?} — the agent
// starts with `messages` and runs once. <answers-json> ({"<toolName>": <result>, ...}): when the
// run finishes with pending client tool calls, answer each with a tool message (the result as
// JSON text) and run the agent again — the client's own message list, as an application does.
// Exit status 1 (message on stderr) when a run fails on the client side.
import { HttpAgent } from "@ag-ui/client";

const [url, inputJson, answersJson] = process.argv.slice(2);
if (!url || !inputJson) {
  console.error("usage: node run_agent.mjs <url> <input-json> [<answers-json>]");
  process.exit(2);
}
const input = JSON.parse(inputJson);
const answers = answersJson ? JSON.parse(answersJson) : null;

const agent = new HttpAgent({ url, threadId: input.threadId, initialMessages: input.messages ?? [] });
let pending = [];
const subscriber = {
  onEvent: ({ event }) => {
    process.stdout.write(JSON.stringify(event) + "\n");
  },
  onRunFinishedEvent: ({ pendingToolCallIds }) => {
    pending = pendingToolCallIds ?? [];
  },
};
const params = { runId: input.runId, tools: input.tools, context: input.context, forwardedProps: input.forwardedProps };

try {
  await agent.runAgent(params, subscriber);
  if (answers && pending.length > 0) {
    const calls = agent.messages.flatMap((message) => message.toolCalls ?? []);
    for (const id of pending) {
      const call = calls.find((candidate) => candidate.id === id);
      if (!call || !(call.function.name in answers)) {
        throw new Error(`no answer given for the pending tool call ${id} (${call?.function.name})`);
      }
      agent.addMessage({
        id: `tool-${id}`, role: "tool", toolCallId: id, content: JSON.stringify(answers[call.function.name]),
      });
    }
    pending = [];
    await agent.runAgent({}, subscriber);
  }
} catch (error) {
  console.error(`run_agent.mjs: ${error?.stack ?? error}`);
  process.exit(1);
}
