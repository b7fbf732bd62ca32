# hello -- example rserve-proxy app (Rserve OCAP mode).
#
# The platform sources this file (working directory /app) and then starts
# Rserve itself with
#
#   Rserve::run.Rserve(websockets.port = 8081L, websockets = TRUE, oob = TRUE,
#                      websockets.qap.oc = TRUE, qap = FALSE)
#
# so this file must NOT call run.Rserve().  It only defines `oc.init`.
#
# In OCAP mode Rserve forks one child process per WebSocket connection and
# calls oc.init() (looked up in the global environment) in that child.  What
# oc.init() returns is sent to the client as the first message (the "RsOC"
# greeting).  The client can call only the functions it received as
# capabilities (ocap() references) -- there is no eval of arbitrary code.

hello_add <- function(a, b) {
  if (!is.numeric(a) || !is.numeric(b) || length(a) != 1L || length(b) != 1L)
    stop("add(a, b): a and b must be single numbers")
  a + b
}

hello_greet <- function(name = "world") {
  if (!is.character(name) || length(name) != 1L || is.na(name))
    stop("greet(name): name must be a single string")
  paste0("Hello, ", name, "!")
}

hello_sysinfo <- function() {
  list(
    r_version      = paste(R.version$major, R.version$minor, sep = "."),
    rserve_version = as.character(utils::packageVersion("Rserve")),
    platform       = R.version$platform,
    pid            = Sys.getpid(),
    time_utc       = format(Sys.time(), "%Y-%m-%dT%H:%M:%SZ", tz = "UTC")
  )
}

oc.init <- function() {
  # A named list of capabilities.  Each ocap() call registers the function in
  # this connection's capability table and returns an "OCref" (a string with
  # class "OCref") that the client uses as the head of a CMD_OCcall.
  list(
    add     = Rserve::ocap(hello_add, "add"),
    greet   = Rserve::ocap(hello_greet, "greet"),
    sysinfo = Rserve::ocap(hello_sysinfo, "sysinfo")
  )
}
