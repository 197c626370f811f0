-- layerdsl's language server for .layers files in Neovim (0.7 or newer, built-in LSP client).
-- Load it from init.lua: `dofile("/path/to/layerdsl/editors/neovim/layerdsl.lua")`, or copy it to
-- ~/.config/nvim/plugin/. The server command is `layerdsl lsp` (pip install 'layerdsl[lsp]');
-- set vim.g.layerdsl_lsp_cmd = { "/path/to/python", "-m", "layerdsl", "lsp" } to use another.

-- (an autocommand rather than vim.filetype.add, which Neovim 0.7 applies only with g:do_filetype_lua)
vim.api.nvim_create_autocmd({ "BufRead", "BufNewFile" }, {
  pattern = "*.layers",
  callback = function()
    vim.bo.filetype = "layers"
  end,
})

local function start(bufnr)
  local config = {
    name = "layerdsl",
    cmd = vim.g.layerdsl_lsp_cmd or { "layerdsl", "lsp" },
    root_dir = vim.fn.fnamemodify(vim.api.nvim_buf_get_name(bufnr), ":p:h"),
  }
  if vim.lsp.start then -- Neovim 0.8+: reuses a running client for the same root
    vim.lsp.start(config, { bufnr = bufnr })
  else -- Neovim 0.7
    local client_id = vim.lsp.start_client(config)
    if client_id then
      vim.lsp.buf_attach_client(bufnr, client_id)
    end
  end
end

vim.api.nvim_create_autocmd("FileType", {
  pattern = "layers",
  callback = function(args)
    start(args.buf)
  end,
})
