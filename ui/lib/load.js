// `useLoad(path)`: GET a JSON resource of the API into a component, with a reload function.

import { useEffect, useState } from "../vendor/preact-htm.js";
import { api } from "./session.js";

export function useLoad(path, deps = []) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const reload = () => api("GET", path).then(setData, (e) => setError(e.message));
  useEffect(() => {
    reload();
  }, deps);
  return [data, reload, error];
}
