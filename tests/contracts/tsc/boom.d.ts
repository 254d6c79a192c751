// Stand-in for @hapi/boom's types (a dependency of Baileys, not in its tarball): only the shape a bot
// reads off `lastDisconnect.error`, as @hapi/boom declares it. Without it the error would type as `any`
// and `error.output.statusCode` would go unchecked.
export declare class Boom<Data = any> extends Error {
  constructor(message?: string | Error, options?: { statusCode?: number; data?: Data });
  isBoom: boolean;
  isServer: boolean;
  data: Data;
  output: {
    statusCode: number;
    payload: { statusCode: number; error: string; message: string; [key: string]: unknown };
    headers: Record<string, string | string[] | number | undefined>;
  };
}
