export * as CdcEvent from "./CdcEvent.ts"
export * as Position from "./Position.ts"
