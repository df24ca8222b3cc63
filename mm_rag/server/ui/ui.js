// The search page of `mm-rag serve`. Everything a record holds is shown as text (textContent, never HTML); the
// API key, when the server has one, lives in this tab's sessionStorage and travels as a header, never in a URL.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const MODALITIES = ["text", "image", "audio", "video"];
  const THUMB = 320;
  const state = { key: sessionStorage.getItem("mm-rag-key"), retry: null, objectUrls: [] };

  class KeyNeeded extends Error {}

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.key) headers.set("X-API-Key", state.key);
    const response = await fetch(path, { ...options, headers });
    if (response.status === 401) {
      askForKey(state.key ? "That key was refused: try again." : "");
      throw new KeyNeeded();
    }
    if (!response.ok) {
      let detail = response.statusText;
      try {
        detail = (await response.json()).detail;
      } catch (_) { /* not JSON */ }
      throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return response;
  }

  function askForKey(message) {
    $("key-form").hidden = false;
    $("key-error").textContent = message;
    $("key").focus();
  }

  async function run(action) {
    state.retry = action;
    $("error").textContent = "";
    try {
      await action();
      $("key-form").hidden = true;
    } catch (error) {
      if (!(error instanceof KeyNeeded)) $("error").textContent = error.message;
    }
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === null || value === undefined) continue;
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  // The words of the query marked in `text`: text nodes and <mark> elements, never parsed as HTML.
  function highlighted(text, query) {
    const fragment = document.createDocumentFragment();
    const words = (query.match(/[\p{L}\p{N}]+/gu) || []).filter((w) => w.length > 1);
    if (!words.length) {
      fragment.append(text);
      return fragment;
    }
    const pattern = new RegExp(`(${words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|")})`, "giu");
    text.split(pattern).forEach((part, index) => {
      if (part) fragment.append(index % 2 ? el("mark", { text: part }) : part);
    });
    return fragment;
  }

  async function mediaUrl(id, thumb) {
    const path = `/media/${encodeURIComponent(id)}${thumb ? `?thumb=${thumb}` : ""}`;
    if (!state.key) return path; // the browser fetches it itself (range requests for audio and video)
    const url = URL.createObjectURL(await (await api(path)).blob());
    state.objectUrls.push(url);
    return url;
  }

  function clock(seconds) {
    const whole = Math.max(0, seconds);
    const minutes = Math.floor(whole / 60);
    return `${minutes}:${(whole - minutes * 60).toFixed(1).padStart(4, "0")}`;
  }

  function documentName(result) {
    return (result.doc_id || result.source || result.uri || "").split(/[\\/]/).pop();
  }

  function where(result) {
    const parts = [result.modality, documentName(result)];
    const meta = result.metadata || {};
    const page = meta.page ?? (String(meta.picture || "").match(/(?:^|&)page=(\d+)/) || [])[1];
    if (page !== undefined && page !== null) parts.push(`page ${page}`); // a slide's number, for slides
    if (meta.section) parts.push(String(meta.section));
    if (result.start !== null && result.start !== undefined) {
      parts.push(result.end !== null && result.end !== undefined
        ? `${clock(result.start)}–${clock(result.end)}` : clock(result.start));
    }
    return parts.filter(Boolean).join(" · ");
  }

  // A player that starts at the hit's start and stops at its end.
  async function player(result) {
    const kind = result.modality === "video" ? "video" : "audio";
    const media = el(kind, { controls: "", preload: "metadata", "data-start": result.start ?? 0,
      "data-end": result.end ?? "", "aria-label": `${kind} of ${documentName(result)}` });
    const start = Number(result.start || 0);
    const end = result.end === null || result.end === undefined ? null : Number(result.end);
    media.addEventListener("loadedmetadata", () => { media.currentTime = start; });
    media.addEventListener("play", () => {
      if (media.currentTime < start - 0.25 || (end !== null && media.currentTime >= end)) media.currentTime = start;
    });
    media.addEventListener("timeupdate", () => {
      if (end !== null && media.currentTime >= end) media.pause();
    });
    media.src = await mediaUrl(result.id);
    return media;
  }

  async function renderResult(result, query) {
    const item = el("li", { tabindex: "0", "data-id": result.id, "data-modality": result.modality });
    const meta = result.metadata || {};
    if (result.modality === "image" || meta.frame_time !== undefined) {
      const alt = result.text ? result.text.slice(0, 300) : `picture from ${documentName(result)}`;
      const image = el("img", { class: "thumb", alt, loading: "lazy" });
      item.append(image);
      mediaUrl(result.id, THUMB).then((url) => { image.src = url; }, () => { image.remove(); });
    }
    const body = el("div", { class: "body" }, el("p", { class: "where", text: where(result) }));
    if (result.text) body.append(el("p", { class: "passage" }, highlighted(result.text, query)));
    if ((result.modality === "audio" || result.modality === "video") && result.uri) {
      try {
        body.append(await player(result));
      } catch (error) {
        if (error instanceof KeyNeeded) throw error;
      }
    }
    body.append(el("details", { class: "why" }, el("summary", { text: `why (score ${result.score.toFixed(3)})` }),
      el("p", { text: result.explanation })));
    item.append(body);
    return item;
  }

  function chosenModalities() {
    return [...document.querySelectorAll("input[name=modality]")].filter((box) => box.checked).map((b) => b.value);
  }

  async function search() {
    const query = $("q").value.trim();
    const mode = $("mode").value;
    const filter = $("filter").value.trim();
    const image = $("image").files[0];
    const audio = $("audio").files[0];
    if (!query && !image && !audio) return;
    const shown = chosenModalities();
    const counts = Object.fromEntries(MODALITIES.filter((m) => !shown.includes(m)).map((m) => [`${m}_k`, 0]));
    let response;
    if (image || audio) {
      const form = new FormData();
      if (image) form.append("image", image);
      if (audio) form.append("audio", audio);
      if (query) form.append("query", query);
      if (filter) form.append("filter", filter);
      form.append("mode", mode);
      for (const [name, value] of Object.entries(counts)) form.append(name, String(value));
      response = await api("/search/media", { method: "POST", body: form });
    } else {
      response = await api("/search", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ query, mode, filter: filter || null, ...counts }) });
    }
    const { results } = await response.json();
    remember(query, mode, shown, filter);
    state.objectUrls.splice(0).forEach((url) => URL.revokeObjectURL(url));
    const list = $("results");
    list.replaceChildren(...await Promise.all(results.map((result) => renderResult(result, query))));
    $("status").textContent = `${results.length} result${results.length === 1 ? "" : "s"}`;
  }

  // The search in the address bar: a URL that runs it again when opened (pictures and clips stay local).
  function remember(query, mode, shown, filter) {
    const params = new URLSearchParams();
    if (query) params.set("q", query);
    if (mode !== "hybrid") params.set("mode", mode);
    if (shown.length !== MODALITIES.length) params.set("modality", shown.join(","));
    if (filter) params.set("filter", filter);
    history.replaceState(null, "", `${location.pathname}?${params}`);
  }

  function restore() {
    const params = new URLSearchParams(location.search);
    $("q").value = params.get("q") || "";
    const mode = params.get("mode");
    if (mode && [...$("mode").options].some((option) => option.value === mode)) $("mode").value = mode;
    const modality = params.get("modality");
    if (modality !== null) {
      const wanted = modality.split(",");
      document.querySelectorAll("input[name=modality]").forEach((box) => { box.checked = wanted.includes(box.value); });
    }
    if (params.get("filter")) {
      $("filter").value = params.get("filter");
      $("more").open = true;
    }
    return Boolean(params.get("q"));
  }

  async function showDocuments() {
    const { documents, total } = await (await api("/documents?limit=1000")).json();
    const list = $("documents");
    list.replaceChildren(...documents.map((doc) => {
      const remove = el("button", { type: "button", text: "Delete" });
      remove.addEventListener("click", () => {
        if (remove.dataset.confirm !== "yes") {
          remove.dataset.confirm = "yes";
          remove.textContent = "Delete for good?";
          return;
        }
        run(async () => {
          await api(`/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
          await showDocuments();
        });
      });
      return el("li", {}, el("span", { text: doc.id }),
        el("span", { class: "where", text: `${doc.records} records · ${doc.modalities.join(", ")}` }), remove);
    }));
    $("status").textContent = `${total} document${total === 1 ? "" : "s"}`;
  }

  async function upload() {
    const files = $("files").files;
    if (!files.length) return;
    const form = new FormData();
    for (const file of files) form.append("files", file);
    const report = await (await api("/ingest", { method: "POST", body: form })).json();
    const failed = Object.entries(report.failed || {}).map(([name, why]) => `${name}: ${why}`);
    $("upload-report").textContent = `${report.records} records from ${report.added.length + report.updated.length}`
      + ` file(s)${failed.length ? `; not stored: ${failed.join("; ")}` : ""}`;
    $("files").value = "";
  }

  function moveFocus(event) {
    const items = [...$("results").children];
    const at = items.indexOf(document.activeElement);
    if (at < 0) return;
    if (event.key === "ArrowDown" && at + 1 < items.length) items[at + 1].focus();
    else if (event.key === "ArrowUp" && at > 0) items[at - 1].focus();
    else return;
    event.preventDefault();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("search-form").addEventListener("submit", (event) => { event.preventDefault(); run(search); });
    $("upload-form").addEventListener("submit", (event) => { event.preventDefault(); run(upload); });
    $("show-documents").addEventListener("click", () => run(showDocuments));
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.key = $("key").value;
      sessionStorage.setItem("mm-rag-key", state.key);
      if (state.retry) run(state.retry);
    });
    $("results").addEventListener("keydown", moveFocus);
    document.addEventListener("keydown", (event) => {
      const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
      if (event.key === "/" && !typing) {
        event.preventDefault();
        $("q").focus();
      }
    });
    if (restore()) run(search);
  });
})();
