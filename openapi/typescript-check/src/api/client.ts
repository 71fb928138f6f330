// The typed client of the VMCloud API: every path, parameter, body and
// answer comes from the types generated from openapi/vmcloud.json.
import createClient from "openapi-fetch";

import type { components, paths } from "./schema";

export type Problem = components["schemas"]["Problem"];

export function apiClient(baseUrl: string, token: string) {
  return createClient<paths>({
    baseUrl,
    headers: { authorization: `Bearer ${token}` },
  });
}

export type ApiClient = ReturnType<typeof apiClient>;
