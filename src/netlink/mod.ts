/** The rtnetlink layer: one import for callers (installer, agent, doctor, VM tests). */
export * from "./constants.ts";
export { type Attr, Attrs, type NlMessage, NlRequest, parseAttrList } from "./message.ts";
export {
  describeFailure,
  genericHint,
  type NetlinkFailure,
  type RequestContext,
  RtnlSocket,
  withRtnl,
} from "./socket.ts";
export * from "./link.ts";
export * from "./vlan.ts";
export * from "./qdisc_request.ts";
export * from "./qdisc_parse.ts";
export * from "./qdisc.ts";
export * from "./filter.ts";
