//! Invoices as PDF: the legal document, from what was frozen at issue (the
//! parties, lines and totals), in one of PDF's built-in fonts so nothing
//! needs embedding. A draft has no number yet, hence no PDF.

use chrono::{DateTime, Utc};
use printpdf::{
    BuiltinFont, Line, LinePoint, Mm, Op, PdfDocument, PdfFontHandle, PdfPage, PdfSaveOptions,
    Point, Pt, TextItem,
};
use sea_orm::ActiveEnum as _;

use super::invoices::{self, InvoiceDetail};
use super::{Services, money};
use crate::db::entities::invoice::InvoiceStatus;
use crate::error::{Error, Result};
use crate::ids::InvoiceId;
use crate::modules::auth::Actor;

/// A rendered invoice.
#[derive(Debug)]
pub struct InvoicePdf {
    /// `invoice-2026-000001.pdf`.
    pub file_name: String,
    pub bytes: Vec<u8>,
}

/// The PDF of one of the actor's own invoices; another account's is not
/// found, whatever the actor's role (staff use the admin route).
pub async fn own(services: &Services, actor: &Actor, id: InvoiceId) -> Result<InvoicePdf> {
    let detail = invoices::get(services, actor, id).await?;
    if detail.invoice.user_id != actor.user_id {
        return Err(Error::not_found("Invoice"));
    }
    render_issued(&detail)
}

/// The PDF of any account's invoice, for staff.
pub async fn any(services: &Services, actor: &Actor, id: InvoiceId) -> Result<InvoicePdf> {
    actor.require_staff()?;
    render_issued(&invoices::get(services, actor, id).await?)
}

fn render_issued(detail: &InvoiceDetail) -> Result<InvoicePdf> {
    let number = detail
        .invoice
        .number
        .as_deref()
        .filter(|_| detail.invoice.status != InvoiceStatus::Draft)
        .ok_or_else(|| Error::InvalidState {
            message: "A draft invoice has no PDF until it is issued.".to_owned(),
            state: detail.invoice.status.to_value(),
        })?;
    Ok(InvoicePdf {
        file_name: format!("invoice-{number}.pdf"),
        bytes: render(detail, number),
    })
}

const PAGE_WIDTH: f32 = 210.0;
const PAGE_HEIGHT: f32 = 297.0;
const MARGIN: f32 = 20.0;
const LINE: f32 = 5.0;
/// Where the amount column starts.
const AMOUNT_X: f32 = 160.0;

/// Lays text out top to bottom, starting a new page when one is full.
struct Pages {
    done: Vec<PdfPage>,
    ops: Vec<Op>,
    /// The baseline of the next line, from the bottom, in mm.
    y: f32,
}

impl Pages {
    fn new() -> Self {
        Self {
            done: Vec::new(),
            ops: Vec::new(),
            y: PAGE_HEIGHT - MARGIN,
        }
    }

    fn text(&mut self, x: f32, text: &str, font: BuiltinFont, size: f32) {
        self.ops.extend([
            Op::StartTextSection,
            Op::SetFont {
                font: PdfFontHandle::Builtin(font),
                size: Pt(size),
            },
            Op::SetTextCursor {
                pos: Point::new(Mm(x), Mm(self.y)),
            },
            Op::ShowText {
                items: vec![TextItem::Text(text.to_owned())],
            },
            Op::EndTextSection,
        ]);
    }

    /// Room for `lines` more lines, or a new page.
    fn room(&mut self, lines: usize) {
        #[allow(clippy::cast_precision_loss)] // a handful of lines
        let needed = lines as f32 * LINE;
        if self.y - needed < MARGIN {
            let ops = std::mem::take(&mut self.ops);
            self.done
                .push(PdfPage::new(Mm(PAGE_WIDTH), Mm(PAGE_HEIGHT), ops));
            self.y = PAGE_HEIGHT - MARGIN;
        }
    }

    /// One line of regular text, with an optional amount in its column.
    fn line(&mut self, text: &str, amount: Option<&str>) {
        self.room(1);
        self.text(MARGIN, text, BuiltinFont::Helvetica, 10.0);
        if let Some(amount) = amount {
            self.text(AMOUNT_X, amount, BuiltinFont::Helvetica, 10.0);
        }
        self.y -= LINE;
    }

    fn bold(&mut self, text: &str, amount: Option<&str>) {
        self.room(1);
        self.text(MARGIN, text, BuiltinFont::HelveticaBold, 10.0);
        if let Some(amount) = amount {
            self.text(AMOUNT_X, amount, BuiltinFont::HelveticaBold, 10.0);
        }
        self.y -= LINE;
    }

    fn gap(&mut self) {
        self.y -= LINE;
    }

    fn rule(&mut self) {
        self.room(1);
        let y = self.y + LINE / 2.0;
        self.ops.push(Op::DrawLine {
            line: Line {
                points: [MARGIN, PAGE_WIDTH - MARGIN]
                    .map(|x| LinePoint {
                        p: Point::new(Mm(x), Mm(y)),
                        bezier: false,
                    })
                    .to_vec(),
                is_closed: false,
            },
        });
        self.y -= LINE / 2.0;
    }

    fn finish(mut self) -> Vec<PdfPage> {
        self.done
            .push(PdfPage::new(Mm(PAGE_WIDTH), Mm(PAGE_HEIGHT), self.ops));
        self.done
    }
}

fn date(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), |at| at.format("%Y-%m-%d").to_string())
}

/// The text lines of a party of the snapshot: name, address lines, country,
/// VAT id and email, as far as they are known.
fn party(snapshot: &serde_json::Value) -> Vec<String> {
    let field = |key: &str| {
        snapshot[key]
            .as_str()
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let mut lines: Vec<String> = field("name").into_iter().map(str::to_owned).collect();
    if let Some(address) = field("address") {
        lines.extend(address.lines().map(str::to_owned));
    }
    lines.extend(field("country").map(str::to_owned));
    lines.extend(field("vat_id").map(|id| format!("VAT: {id}")));
    lines.extend(field("email").map(str::to_owned));
    lines
}

fn render(detail: &InvoiceDetail, number: &str) -> Vec<u8> {
    let invoice = &detail.invoice;
    let amount = |minor: i64| money::format(minor, &invoice.currency);
    let mut pages = Pages::new();
    pages.text(MARGIN, "INVOICE", BuiltinFont::HelveticaBold, 18.0);
    pages.text(
        AMOUNT_X - 40.0,
        &format!("No. {number}"),
        BuiltinFont::HelveticaBold,
        12.0,
    );
    pages.y -= 3.0 * LINE;
    pages.line(&format!("Issued: {}", date(invoice.issued_at)), None);
    pages.line(&format!("Due: {}", date(invoice.due_at)), None);
    pages.line(
        &format!(
            "Period: {} to {}",
            invoice.period_start.format("%Y-%m-%d"),
            // The period ends at midnight: its last day is the day before.
            (invoice.period_end - chrono::Duration::seconds(1)).format("%Y-%m-%d")
        ),
        None,
    );
    match invoice.status {
        InvoiceStatus::Paid => pages.bold(&format!("PAID on {}", date(invoice.paid_at)), None),
        InvoiceStatus::Void => pages.bold("VOID: this invoice was cancelled", None),
        InvoiceStatus::Open | InvoiceStatus::Draft => {}
    }
    pages.gap();
    for (title, key) in [("Seller", "seller"), ("Bill to", "customer")] {
        pages.bold(title, None);
        for line in party(&detail.parties[key]) {
            pages.line(&line, None);
        }
        pages.gap();
    }
    pages.bold("Description", Some("Amount"));
    pages.rule();
    for line in &detail.lines {
        pages.line(&line.description, Some(&amount(line.amount_minor)));
    }
    pages.rule();
    pages.line("Subtotal", Some(&amount(invoice.subtotal_minor)));
    let rate = invoice.tax_rate_basis_points;
    pages.line(
        &format!("VAT {}.{:02} %", rate / 100, rate % 100),
        Some(&amount(invoice.tax_minor)),
    );
    pages.bold("Total", Some(&amount(invoice.total_minor)));
    if let Some(mention) = &invoice.legal_mention {
        pages.gap();
        // The mention is long: two lines at a sentence's natural break.
        let (first, rest) = mention
            .split_once(" (")
            .map_or((mention.as_str(), ""), |p| p);
        pages.line(first, None);
        if !rest.is_empty() {
            pages.line(&format!("({rest}"), None);
        }
    }
    let mut document = PdfDocument::new(&format!("Invoice {number}"));
    document
        .with_pages(pages.finish())
        .save(&PdfSaveOptions::default(), &mut Vec::new())
}
