// Three calls through the generated client, written as the console will
// write them: `tsc --noEmit` fails when the document stops describing them
// (a path, a parameter, a body field or an answer's shape).
import { type ApiClient, type Problem } from "./api/client";

function explain(problem: Problem): string {
  return `${problem.type}: ${problem.detail}`;
}

export async function firstInstanceHostnames(api: ApiClient): Promise<string[]> {
  const { data, error } = await api.GET("/api/v1/instances", {
    params: { query: { limit: 5 } },
  });
  if (error) throw new Error(explain(error));
  return data.items.map((instance) => instance.hostname);
}

export async function addSshKey(api: ApiClient, publicKey: string): Promise<string> {
  const { data, error } = await api.POST("/api/v1/ssh-keys", {
    body: { public_key: publicKey, name: "laptop" },
  });
  if (error) throw new Error(explain(error));
  return data.fingerprint;
}

export async function instanceStatus(api: ApiClient, id: string): Promise<string> {
  const { data, error, response } = await api.GET("/api/v1/instances/{id}", {
    params: { path: { id } },
  });
  if (response.status === 404) return "gone";
  if (error) throw new Error(explain(error));
  return data.status;
}
