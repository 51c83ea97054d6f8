// Workbench console: what the server-rendered pages cannot do alone. Everything works without it,
// except live progress, which then shows on reload.
"use strict";

// Jobs: follow each running job over server-sent events (the gateway's WatchJob) until it ends.
function followJob(row) {
  const bar = row.querySelector("progress");
  const state = row.querySelector(".state");
  const message = row.querySelector(".message");
  const source = new EventSource(`/jobs/${row.dataset.job}/events?after=${row.dataset.after || 0}`);
  source.onmessage = (e) => {
    const event = JSON.parse(e.data);
    state.textContent = event.state;
    state.className = `state state-${event.state}`;
    if (event.fraction) bar.value = event.fraction;
    message.textContent = event.message || event.stage || "";
    if (!event.terminal) return;
    source.close();  // or EventSource reconnects when the server ends the stream
    delete row.dataset.live;
    row.querySelector("form.cancel")?.remove();
    if (event.state === "succeeded") bar.value = 1;
    if (event.error) message.textContent = event.error;
    if (event.result) {
      const link = document.createElement("a");
      link.href = event.result.href;
      link.textContent = event.result.label;
      row.querySelector(".result").replaceChildren(link);
    }
  };
  source.addEventListener("failure", (e) => {
    source.close();
    message.textContent = JSON.parse(e.data).message;
  });
}

// Uploads: send the form with XMLHttpRequest, the one browser API that reports upload progress.
function uploadWithProgress(form) {
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const bar = form.querySelector(".upload-progress");
    const button = form.querySelector("button");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.upload.onprogress = (p) => { if (p.lengthComputable) bar.value = p.loaded / p.total; };
    xhr.onload = () => {
      if (xhr.status < 400 && xhr.responseURL) { window.location.assign(xhr.responseURL); return; }
      document.open(); document.write(xhr.responseText); document.close();  // the error page
    };
    xhr.onerror = () => { button.disabled = false; bar.hidden = true; alert("The upload failed: the console is unreachable."); };
    bar.hidden = false;
    button.disabled = true;
    xhr.send(new FormData(form));
  });
}

// The model form shows the file fields of the chosen framework only.
function frameworkFields(form) {
  const select = form.querySelector("select.framework");
  const show = () => form.querySelectorAll("fieldset[data-for]").forEach((set) => {
    set.hidden = select.value !== "" && !set.dataset.for.split(" ").includes(select.value);
  });
  select.addEventListener("change", show);
  show();
}

// Fields of one method only (data-for-method) show while that method is chosen.
function methodFields(form) {
  const select = form.querySelector("select.method");
  const show = () => form.querySelectorAll("[data-for-method]").forEach((el) => {
    el.hidden = el.dataset.forMethod !== select.value;
  });
  select.addEventListener("change", show);
  show();
}

// Visualize: each box set can be hidden; the server draws the picture the checkboxes describe.
function boxSets(form) {
  const picture = document.getElementById("picture");
  form.addEventListener("change", () => {
    const q = new URLSearchParams();
    if (!form.elements.first.checked) q.set("first", "0");
    if (!form.elements.second.checked) q.set("second", "0");
    if (form.elements.annotations?.checked) q.set("against", "annotations");
    picture.src = q.size ? `${form.dataset.base}?${q}` : form.dataset.base;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("tr.job[data-live]").forEach(followJob);
  document.querySelectorAll("form.upload").forEach(uploadWithProgress);
  document.querySelectorAll("form:has(select.framework)").forEach(frameworkFields);
  document.querySelectorAll("form:has(select.method)").forEach(methodFields);
  const sets = document.getElementById("box-sets");
  if (sets) boxSets(sets);
});
