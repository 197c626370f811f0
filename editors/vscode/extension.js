// Starts layerdsl's language server (`layerdsl lsp`) for .layers files.
"use strict";
const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function serverOptions(config) {
  const command = config.get("server.path") || "layerdsl";
  const args = config.get("server.args") || ["lsp"];
  return { command, args, transport: TransportKind.stdio };
}

function activate(context) {
  const config = vscode.workspace.getConfiguration("layerdsl");
  const clientOptions = {
    documentSelector: [
      { scheme: "file", language: "layers" },
      { scheme: "untitled", language: "layers" },
    ],
  };
  client = new LanguageClient("layerdsl", "layerdsl language server", serverOptions(config), clientOptions);
  context.subscriptions.push({ dispose: () => client && client.stop() });
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate, serverOptions };
