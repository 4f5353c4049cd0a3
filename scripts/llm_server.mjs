// A small OpenAI-compatible chat server over a local GGUF model, for Weir's tests and benchmarks of `ai_extract`:
// answers POST /v1/chat/completions on 127.0.0.1 with node-llama-cpp on the CPU, holding answers to
// `response_format: json_schema` (or JSON mode) with a grammar, and counts tokens as the model does. One request is
// answered at a time; the others wait their turn.
//
//   node scripts/llm_server.mjs --port 8099 --model /path/to/model.gguf --modules /var/tmp/weir-llm/node_modules
//
// It prints `listening on http://127.0.0.1:PORT` once the model is loaded.

import http from "node:http";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith("--") ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
if (!args.port || !args.model || !args.modules) {
  console.error("usage: llm_server.mjs --port PORT --model MODEL.gguf --modules NODE_MODULES_DIR");
  process.exit(2);
}
const { getLlama, LlamaChatSession } = await import(
  pathToFileURL(path.join(args.modules, "node-llama-cpp", "dist", "index.js")).href
);

const llama = await getLlama({ gpu: false, build: "never", maxThreads: os.cpus().length });
const model = await llama.loadModel({ modelPath: args.model });
const context = await model.createContext({ contextSize: 4096 });
const sequence = context.getSequence();

/** The schema as the grammar builder takes it: an enum stands alone, without a `type` beside it. */
function forGrammar(schema) {
  if (Array.isArray(schema)) return schema.map(forGrammar);
  if (schema === null || typeof schema !== "object") return schema;
  const out = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === "type" && schema.enum) continue;
    out[key] = forGrammar(value);
  }
  return out;
}

async function grammarOf(format) {
  if (format?.type === "json_schema") return llama.createGrammarForJsonSchema(forGrammar(format.json_schema.schema));
  if (format?.type === "json_object") return llama.getGrammarFor("json");
  return undefined;
}

async function complete(body) {
  const messages = body.messages ?? [];
  const system = messages.filter((m) => m.role === "system").map((m) => m.content).join("\n");
  const turns = messages.filter((m) => m.role !== "system");
  const last = turns.pop();
  if (!last || last.role !== "user") throw new Error("the last message must be the user's");
  const session = new LlamaChatSession({ contextSequence: sequence, systemPrompt: system, autoDisposeSequence: false });
  try {
    const history = [{ type: "system", text: system }];
    for (const m of turns) {
      history.push(m.role === "user" ? { type: "user", text: m.content } : { type: "model", response: [m.content] });
    }
    session.setChatHistory(history);
    const maxTokens = body.max_tokens ?? 512;
    const { responseText: content, stopReason } = await session.promptWithMeta(last.content, {
      grammar: await grammarOf(body.response_format),
      maxTokens,
      temperature: body.temperature ?? 0,
      // Greedy decoding needs only the likeliest token; without the cut, the grammar is checked against the whole
      // vocabulary at every step, which takes over a minute an answer on two cores.
      topK: (body.temperature ?? 0) === 0 ? 1 : 40,
      seed: body.seed,
    });
    const promptText = messages.map((m) => m.content).join("\n");
    const outputTokens = model.tokenize(content).length;
    const finish = stopReason === "maxTokens" ? "length" : "stop";
    return {
      id: `chatcmpl-${Date.now()}`,
      object: "chat.completion",
      model: body.model,
      choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: finish }],
      usage: { prompt_tokens: model.tokenize(promptText).length, completion_tokens: outputTokens },
    };
  } finally {
    session.dispose({ disposeSequence: false });
  }
}

// One answer at a time: the model has one sequence.
let queue = Promise.resolve();
function inTurn(job) {
  const next = queue.then(job, job);
  queue = next.catch(() => {});
  return next;
}

const server = http.createServer((req, res) => {
  const reply = (status, value) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(value));
  };
  if (req.method === "GET" && req.url === "/v1/models") {
    return reply(200, { object: "list", data: [{ id: path.basename(args.model), object: "model" }] });
  }
  if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
    return reply(404, { error: { message: `no route ${req.method} ${req.url}` } });
  }
  let text = "";
  req.on("data", (chunk) => (text += chunk));
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(text);
    } catch (e) {
      return reply(400, { error: { message: `the request is not JSON: ${e.message}` } });
    }
    inTurn(() => complete(body)).then(
      (completion) => reply(200, completion),
      (e) => reply(500, { error: { message: String(e?.message ?? e) } }),
    );
  });
});
server.listen(Number(args.port), "127.0.0.1", () => console.log(`listening on http://127.0.0.1:${args.port}`));
