// Small form helpers shared by the views.

/** Show `message` in the form's error slot (hidden when empty). */
export function formError(form, message) {
  const slot = form.querySelector(".form-error");
  if (!slot) return;
  slot.textContent = message || "";
  slot.hidden = !message;
}

/**
 * Run `work` once at a time per form; errors go to `onError`. Buttons are marked aria-disabled
 * rather than disabled so that keyboard focus stays where it was.
 */
export async function busy(form, work, onError) {
  if (form.dataset.busy === "1") return;
  form.dataset.busy = "1";
  const buttons = [...form.querySelectorAll("button")];
  buttons.forEach((b) => b.setAttribute("aria-disabled", "true"));
  form.setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (err) {
    onError(err);
  } finally {
    buttons.forEach((b) => b.removeAttribute("aria-disabled"));
    form.removeAttribute("aria-busy");
    delete form.dataset.busy;
  }
}
