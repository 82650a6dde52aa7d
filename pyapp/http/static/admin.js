// pgwallet admin: live payout jobs (Server-Sent Events, with polling as the fallback), failed entries,
// retry and cancel; a performer's queue; jobs by status. Every call goes to the /v1 routes with the token.
"use strict";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("pgwallet-token") || "";
let source = null, poller = null;

function say(text) { $("message").textContent = text; }
function esc(v) { return String(v ?? "").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }
function fmt(n) { return Number(n).toLocaleString("en-US"); }

async function call(method, name, args) {
  const init = {method, headers: {"Authorization": "Bearer " + token}};
  let url = "/v1/" + name;
  if (method === "GET") url += "?" + new URLSearchParams(args);
  else { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(args); }
  const answer = await fetch(url, init);
  const body = await answer.json();
  if (!answer.ok) throw new Error(body.error ? body.error.code + ": " + (body.error.detail || body.error.message) : answer.status);
  return body.data;
}

function renderJobs(jobs) {
  const rows = jobs.map((j) => {
    const done = j.paid_winners + j.failed_winners + j.cancelled_winners;
    return `<tr data-job="${j.job_id}" class="job">
      <td>${j.job_id}</td><td>${esc(j.challenge_id)}</td>
      <td class="status status-${esc(j.status)}">${esc(j.status)}</td>
      <td><span class="bar${j.failed_winners ? " errors" : ""}"><span style="width:${j.progress_percent}%"></span></span>
          <span class="percent">${Number(j.progress_percent).toFixed(0)}%</span></td>
      <td class="counts">${fmt(j.paid_winners)} paid, ${fmt(j.failed_winners)} failed, ${fmt(done)}/${fmt(j.total_winners)}</td>
      <td>${j.failed_winners ? `<button class="show-failed">failed entries</button> <button class="retry">retry failed</button>` : ""}
          ${["queued", "running", "completed_with_errors"].includes(j.status) ? `<button class="cancel">cancel</button>` : ""}</td>
    </tr>`;
  });
  $("payouts").querySelector("tbody").innerHTML = rows.join("") || `<tr><td colspan="6" class="muted">no payout job</td></tr>`;
}

function renderQueue(performer, queue) {
  if (!performer) { $("queue").textContent = "enter a performer id"; return; }
  if (!queue || !queue.length) { $("queue").textContent = `performer ${performer}: no open item`; return; }
  $("queue").innerHTML = `<table><tr><th>position</th><th>item</th><th>status</th><th>tokens</th><th>wait</th></tr>` +
    queue.map((e) => `<tr><td>${e.position ?? ""}</td><td>${e.item_id} ${esc(e.title)}</td><td>${esc(e.status)}</td>
      <td>${fmt(e.tokens)}</td><td>~${fmt(e.estimated_wait_seconds ?? 0)} s</td></tr>`).join("") + `</table>`;
}

function render(data) {
  renderJobs(data.payout_jobs);
  renderQueue(data.performer_id, data.queue);
  const counts = Object.entries(data.jobs_by_status || {}).map(([k, v]) => `${esc(k)}: ${fmt(v)}`).join(", ");
  $("jobs").textContent = counts || "no job";
}

async function poll() {
  try { render({payout_jobs: await call("GET", "list_payout_jobs", {limit: 20}), jobs_by_status: {}}); }
  catch (e) { say(e.message); }
}

function connect() {
  if (source) source.close();
  if (poller) { clearInterval(poller); poller = null; }
  const performer = $("performer").value;
  source = new EventSource("/admin/events?" + new URLSearchParams({token, ...(performer ? {performer} : {})}));
  source.addEventListener("snapshot", (e) => { $("live").textContent = "live"; $("live").className = "on"; render(JSON.parse(e.data)); });
  source.addEventListener("failure", (e) => say(JSON.parse(e.data).detail || "error"));
  source.onerror = () => {   // the stream failed: poll every 2 s until it comes back
    $("live").textContent = "polling"; $("live").className = "muted";
    if (!poller) { poller = setInterval(poll, 2000); poll(); }
  };
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("pgwallet-token", token);
  connect();
});

$("payouts").addEventListener("click", async (e) => {
  const row = e.target.closest("tr.job");
  if (!row) return;
  const job = Number(row.dataset.job);
  try {
    if (e.target.classList.contains("retry")) {
      const done = await call("POST", "retry_failed_payout_entries", {job_id: job});
      say(`job ${job}: ${fmt(done.retried)} failed entries are pending again`);
      $("failed").innerHTML = "";
    } else if (e.target.classList.contains("cancel")) {
      if (!confirm(`Cancel payout job ${job}? What is left in the pool is released.`)) return;
      await call("POST", "cancel_payout_job", {job_id: job});
      say(`job ${job} cancelled`);
    } else if (e.target.classList.contains("show-failed")) {
      const entries = await call("GET", "list_failed_payout_entries", {job_id: job, limit: 100});
      $("failed").innerHTML = `<h3>Failed entries of job ${job}</h3><table class="failed-entries"><tr><th>entry</th><th>winner account</th><th>amount</th><th>error</th><th>attempts</th></tr>` +
        entries.map((f) => `<tr><td>${f.entry_id}</td><td>${f.account_id}</td><td>${fmt(f.amount)}</td><td>${esc(f.error)}</td><td>${f.attempts}</td></tr>`).join("") + `</table>`;
    }
  } catch (err) { say(err.message); }
});

if (token) { $("token").value = token; }
