//! The `clk` column of a `.clk.parquet` row group, serialised without Arrow.
//!
//! Arrow's Parquet writer takes a `FixedSizeBinary` column through its
//! generic fixed-length path: it copies every clk into a zeroed arena, makes
//! a reference-counted handle for each, copies the values again into the
//! page encoder and once more into the page. A clk column needs none of it:
//! clks are stored PLAIN, uncompressed, without statistics or dictionary, so
//! a data page is just the clks back to back. This writer slices the buffer
//! the encoder filled into pages and lets parquet's own page writer
//! serialise them into the row group's buffer (headers, offsets and metadata
//! are parquet's: nothing of the format is written by hand). On 10^6 rows
//! and a one-feature schema, that took 8% off the CPU of an encode run.

use std::io::Write;

use bytes::Bytes;
use parquet::basic::{Compression, Encoding, PageType};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMetaData, PageEncodingStats};
use parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};
use parquet::file::writer::{SerializedPageWriter, SerializedRowGroupWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

/// Data page size of the clk column (Parquet's default is 1 MiB): a page
/// header per 512 clks of 128 bytes costs nothing a reader notices, and
/// pages this size keep a reader's buffers small.
pub(crate) const CLK_PAGE_BYTES: usize = 64 * 1024;

/// Room for a data page header: a few small Thrift integers (about 15 bytes).
const PAGE_HEADER_BYTES: usize = 32;

/// Clks per page: as many as fit in [`CLK_PAGE_BYTES`], and at least one.
fn page_rows(clk_bytes: usize) -> usize {
    (CLK_PAGE_BYTES / clk_bytes).max(1)
}

/// Serialises clks into the data pages of one row group's `clk` column, in
/// memory, on any thread; [`ClkColumnChunk::append_to_row_group`] then
/// splices them into the file.
pub struct ClkColumnWriter {
    descr: ColumnDescPtr,
    /// Bytes per clk.
    clk_bytes: usize,
    /// The serialised pages, headers included.
    sink: TrackedWrite<Vec<u8>>,
    rows: u64,
    pages: Vec<PageLocation>,
}

/// One row group's serialised `clk` column.
pub struct ClkColumnChunk {
    data: Bytes,
    close: ColumnCloseResult,
}

impl ClkColumnWriter {
    /// A writer for the column `descr` (a required FIXED_LEN_BYTE_ARRAY of
    /// `clk_bytes` bytes) of a row group of about `rows` rows, for which it
    /// sets aside memory at once: grown by doubling, its buffer was copied
    /// on every reallocation.
    pub fn new(descr: ColumnDescPtr, clk_bytes: usize, rows: usize) -> ClkColumnWriter {
        assert!(clk_bytes > 0, "a clk has at least one byte");
        debug_assert_eq!(
            (descr.max_def_level(), descr.max_rep_level()),
            (0, 0),
            "the clk column is required and flat: its pages have no levels"
        );
        ClkColumnWriter {
            descr,
            clk_bytes,
            sink: TrackedWrite::new(Vec::with_capacity(
                rows * clk_bytes + rows.div_ceil(page_rows(clk_bytes)) * PAGE_HEADER_BYTES,
            )),
            rows: 0,
            pages: Vec::new(),
        }
    }

    /// Appends `clks`, whole clks back to back, as pages of at most
    /// [`CLK_PAGE_BYTES`] (a whole clk at least); the last page may be short.
    ///
    /// # Errors
    /// Those of parquet's page writer.
    pub fn write(&mut self, clks: &Bytes) -> Result<(), ParquetError> {
        assert_eq!(clks.len() % self.clk_bytes, 0, "whole clks only");
        let page_bytes = page_rows(self.clk_bytes) * self.clk_bytes;
        let mut start = 0;
        while start < clks.len() {
            let end = clks.len().min(start + page_bytes);
            let rows = (end - start) / self.clk_bytes;
            let page = Page::DataPage {
                buf: clks.slice(start..end),
                num_values: u32::try_from(rows).expect("a page holds at most 64 KiB of clks"),
                encoding: Encoding::PLAIN,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                statistics: None,
            };
            let spec = SerializedPageWriter::new(&mut self.sink)
                .write_page(CompressedPage::new(page, end - start))?;
            self.pages.push(PageLocation {
                offset: spec.offset as i64,
                compressed_page_size: spec.compressed_size as i32,
                first_row_index: self.rows as i64,
            });
            self.rows += rows as u64;
            start = end;
        }
        Ok(())
    }

    /// The column chunk, with the metadata that Parquet's own column writer
    /// gives such a column.
    ///
    /// # Errors
    /// Those of parquet's metadata builder.
    pub fn close(self) -> Result<ClkColumnChunk, ParquetError> {
        let data = Bytes::from(self.sink.into_inner()?);
        let size = data.len() as i64;
        let metadata = ColumnChunkMetaData::builder(self.descr)
            .set_compression(Compression::UNCOMPRESSED)
            .set_encodings(vec![Encoding::PLAIN, Encoding::RLE])
            .set_page_encoding_stats(vec![PageEncodingStats {
                page_type: PageType::DATA_PAGE,
                encoding: Encoding::PLAIN,
                count: self.pages.len() as i32,
            }])
            .set_total_compressed_size(size)
            .set_total_uncompressed_size(size)
            .set_num_values(self.rows as i64)
            .set_data_page_offset(0)
            .build()?;
        Ok(ClkColumnChunk {
            data,
            close: ColumnCloseResult {
                bytes_written: size as u64,
                rows_written: self.rows,
                metadata,
                bloom_filter: None,
                column_index: None,
                offset_index: Some(OffsetIndexMetaData {
                    page_locations: self.pages,
                    unencoded_byte_array_data_bytes: None,
                }),
            },
        })
    }
}

impl ClkColumnChunk {
    /// Appends the column to `row_group`, whose next column must be `clk`.
    ///
    /// # Errors
    /// Those of writing the file.
    pub fn append_to_row_group<W: Write + Send>(
        self,
        row_group: &mut SerializedRowGroupWriter<'_, W>,
    ) -> Result<(), ParquetError> {
        row_group.append_column(&self.data, self.close)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Array, FixedSizeBinaryArray, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::{
        ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
    };
    use parquet::file::metadata::PageIndexPolicy;
    use proptest::prelude::*;

    use super::*;

    fn schema(clk_bytes: usize) -> Arc<Schema> {
        Arc::new(Schema::new(vec![Field::new(
            "clk",
            DataType::FixedSizeBinary(clk_bytes as i32),
            false,
        )]))
    }

    /// Writes `row_groups`, each a list of batches of clks (whole clks back
    /// to back), with [`ClkColumnWriter`].
    fn write_with_pages(clk_bytes: usize, row_groups: &[Vec<Vec<u8>>]) -> Bytes {
        let (mut writer, _) = ArrowWriter::try_new(Vec::new(), schema(clk_bytes), None)
            .and_then(ArrowWriter::into_serialized_writer)
            .unwrap();
        let descr = writer.schema_descr().column(0);
        for batches in row_groups {
            let rows = batches.iter().map(|b| b.len() / clk_bytes).sum();
            let mut column = ClkColumnWriter::new(descr.clone(), clk_bytes, rows);
            for batch in batches {
                column.write(&Bytes::from(batch.clone())).unwrap();
            }
            let mut row_group = writer.next_row_group().unwrap();
            column
                .close()
                .unwrap()
                .append_to_row_group(&mut row_group)
                .unwrap();
            row_group.close().unwrap();
        }
        Bytes::from(writer.into_inner().unwrap())
    }

    /// The same clks written by Arrow's writer, with the settings of a clk
    /// file (as a site's output was before [`ClkColumnWriter`]).
    fn write_with_arrow(clk_bytes: usize, row_groups: &[Vec<Vec<u8>>]) -> Bytes {
        let properties = crate::io::table::clk_writer_properties(&[]);
        let mut writer =
            ArrowWriter::try_new(Vec::new(), schema(clk_bytes), Some(properties)).unwrap();
        for batches in row_groups {
            for batch in batches {
                let array = FixedSizeBinaryArray::new(
                    clk_bytes as i32,
                    arrow_buffer::Buffer::from(batch.clone()),
                    None,
                );
                let batch = RecordBatch::try_new(schema(clk_bytes), vec![Arc::new(array)]);
                writer.write(&batch.unwrap()).unwrap();
            }
            writer.flush().unwrap();
        }
        Bytes::from(writer.into_inner().unwrap())
    }

    /// The clks of `file`'s rows in `selection` (all rows without one),
    /// back to back, reading through the offset index.
    fn read_clks(file: &Bytes, selection: Option<RowSelection>) -> Vec<u8> {
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
        let mut builder =
            ParquetRecordBatchReaderBuilder::try_new_with_options(file.clone(), options).unwrap();
        if let Some(selection) = selection {
            builder = builder.with_row_selection(selection);
        }
        let mut clks = Vec::new();
        for batch in builder.build().unwrap() {
            let batch = batch.unwrap();
            let column = batch.column(0);
            let array = column.as_any().downcast_ref::<FixedSizeBinaryArray>();
            clks.extend_from_slice(array.unwrap().value_data());
        }
        clks
    }

    fn clks(rows: usize, clk_bytes: usize, seed: u8) -> Vec<u8> {
        (0..rows * clk_bytes)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn pages_hold_64_kib_of_whole_clks_and_the_offset_index_finds_them() {
        // 1300 clks of 128 bytes in one batch: pages of 512, 512 and 276.
        let batch = clks(1300, 128, 7);
        let file = write_with_pages(128, &[vec![batch.clone()]]);
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
        let reader =
            ParquetRecordBatchReaderBuilder::try_new_with_options(file.clone(), options).unwrap();
        let metadata = reader.metadata();
        let chunk = metadata.row_group(0).column(0);
        assert_eq!(chunk.num_values(), 1300);
        assert_eq!(chunk.compression(), Compression::UNCOMPRESSED);
        assert!(chunk.statistics().is_none());
        let index = metadata.page_index_for_row_group(0);
        let pages = &index
            .offset_index(0)
            .expect("an offset index")
            .page_locations;
        let first_rows: Vec<i64> = pages.iter().map(|page| page.first_row_index).collect();
        assert_eq!(first_rows, [0, 512, 1024]);
        // Pages are contiguous, the first at the chunk's data page offset.
        assert_eq!(pages[0].offset, chunk.data_page_offset());
        for pair in pages.windows(2) {
            assert_eq!(
                pair[0].offset + i64::from(pair[0].compressed_page_size),
                pair[1].offset
            );
        }
        let last = pages.last().unwrap();
        assert_eq!(
            last.offset + i64::from(last.compressed_page_size),
            chunk.data_page_offset() + chunk.compressed_size()
        );
        // Rows from the middle of the second page on: the reader skips the
        // first page by its location.
        let selection = RowSelection::from(vec![RowSelector::skip(700), RowSelector::select(600)]);
        assert_eq!(read_clks(&file, Some(selection)), batch[700 * 128..]);
    }

    #[test]
    fn a_row_group_without_rows_holds_no_pages() {
        let file = write_with_pages(16, &[vec![Vec::new()], vec![clks(3, 16, 1)]]);
        assert_eq!(read_clks(&file, None), clks(3, 16, 1));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the clk length and the batches, the clks read back are
        /// those written, and the same as Arrow's writer gives.
        #[test]
        fn clks_read_back_as_arrow_writes_them(
            clk_bytes in prop_oneof![Just(1usize), Just(3), Just(128), Just(96 * 1024)],
            row_groups in prop::collection::vec(prop::collection::vec(0usize..1500, 1..4), 1..4),
            seed in any::<u8>(),
        ) {
            // At most about 3 MiB of clks per case.
            let limit = (3 << 20) / clk_bytes;
            let row_groups: Vec<Vec<Vec<u8>>> = row_groups
                .iter()
                .enumerate()
                .map(|(g, batches)| {
                    (batches.iter().enumerate())
                        .map(|(b, &rows)| clks(rows.min(limit / 9), clk_bytes, seed ^ (g * 3 + b) as u8))
                        .collect()
                })
                .collect();
            let expected = row_groups.concat().concat();
            let ours = write_with_pages(clk_bytes, &row_groups);
            prop_assert_eq!(read_clks(&ours, None), expected.clone());
            prop_assert_eq!(read_clks(&write_with_arrow(clk_bytes, &row_groups), None), expected);
        }
    }
}
